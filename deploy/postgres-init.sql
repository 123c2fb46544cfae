-- segmentflow's own database beside Temporal's, created on the first start of the compose PostgreSQL.
CREATE DATABASE segmentflow;
