-- seed: Inbox
-- id: 01JDA0D1B2C3D4E5F6G7H8J9K0
--
-- Every installation starts with an Inbox list.

INSERT INTO lists (name) VALUES ('Inbox') ON CONFLICT (name) DO NOTHING;
