-- migration: Create items
-- id: 01JDA0B1B2C3D4E5F6G7H8J9K0

-- migrate: up
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id bigint NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    title text NOT NULL CHECK (title <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- migrate: down
DROP TABLE items;
