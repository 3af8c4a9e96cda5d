-- migration: Create lists
-- id: 01JDA0A1B2C3D4E5F6G7H8J9K0

-- migrate: up
CREATE TABLE lists (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- migrate: down
DROP TABLE lists;
