-- The closed loop (issue 5). Campaigns, batches and candidates hold each entity's newest
-- document (seq: the outbox row it came from; an older one never wins). Plates are one row per
-- plate a campaign ran, with its QC; results one row per completed candidate, with provenance.

CREATE TABLE labloop.campaigns (
    id         text PRIMARY KEY,
    cell       text NOT NULL,
    state      text NOT NULL,
    workflow   text,
    doc        jsonb NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    seq        bigint NOT NULL
);

CREATE TABLE labloop.batches (
    campaign    text NOT NULL,
    batch       text NOT NULL,
    cell        text NOT NULL,
    state       text NOT NULL,
    model_name  text,
    model_version text,
    doc         jsonb NOT NULL,
    received_at timestamptz,
    done_at     timestamptz,
    seq         bigint NOT NULL,
    PRIMARY KEY (campaign, batch)
);

CREATE TABLE labloop.candidates (
    campaign   text NOT NULL,
    id         text NOT NULL,
    cell       text NOT NULL,
    batch      text NOT NULL,
    state      text NOT NULL,
    params     jsonb,
    score      double precision,
    uncertainty double precision,
    run        uuid,
    plate      text,
    reason     text,
    doc        jsonb NOT NULL,
    updated_at timestamptz,
    seq        bigint NOT NULL,
    PRIMARY KEY (campaign, id)
);
CREATE INDEX candidates_state ON labloop.candidates (campaign, state);

CREATE TABLE labloop.plates (
    cell      text NOT NULL,
    seq       bigint NOT NULL,
    campaign  text NOT NULL,
    plate     text NOT NULL,
    run       uuid,
    passed    boolean NOT NULL,
    z_prime   double precision,
    mu_pos    double precision,
    sd_pos    double precision,
    mu_neg    double precision,
    sd_neg    double precision,
    reason    text,
    layout    jsonb,
    at        timestamptz NOT NULL,
    PRIMARY KEY (cell, seq)
);
CREATE INDEX plates_campaign ON labloop.plates (campaign, plate);

CREATE TABLE labloop.results (
    cell          text NOT NULL,
    seq           bigint NOT NULL,
    campaign      text NOT NULL,
    candidate     text NOT NULL,
    batch         text NOT NULL,
    model_name    text,
    model_version text,
    params        jsonb,
    value         double precision NOT NULL,
    sd            double precision,
    replicates    jsonb,
    raw           jsonb,
    wells         jsonb,
    plate         text,
    run           uuid,
    z_prime       double precision,
    doc           jsonb NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (cell, seq)
);
CREATE INDEX results_campaign ON labloop.results (campaign, candidate);
