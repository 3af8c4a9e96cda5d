-- migration: Items done at
-- id: 01JDA0C1B2C3D4E5F6G7H8J9K0

-- migrate: up
ALTER TABLE items ADD COLUMN done_at timestamptz;
CREATE INDEX items_open ON items (list_id, id) WHERE done_at IS NULL;

-- migrate: down
DROP INDEX items_open;
ALTER TABLE items DROP COLUMN done_at;
