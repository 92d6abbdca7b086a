ALTER TABLE credit_reservations DROP COLUMN organization_id;
DROP TABLE organization_limits;
