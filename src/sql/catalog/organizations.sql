-- Organizations: a tree under the built-in root organization, and who holds
-- which application role in each (src/sql/access_control.sql).

CREATE TABLE fleet.organizations (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    parent_id    text REFERENCES fleet.organizations (id),
    -- ids from root down to this organization: subtree tests are "path @> {id}"
    path         text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT organizations_root_has_no_parent CHECK ((id = 'root') = (parent_id IS NULL))
);
CREATE INDEX organizations_path_idx ON fleet.organizations USING gin (path);
COMMENT ON TABLE fleet.organizations IS 'Organizations, a tree under "root"; path lists the ids from root down to each one';

INSERT INTO fleet.organizations (id, display_name, parent_id, path)
VALUES ('root', 'Root', NULL, ARRAY['root']);

CREATE TABLE fleet.organization_members (
    organization_id text NOT NULL REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    member          regrole NOT NULL,
    app_role        text NOT NULL CHECK (app_role IN ('administrator', 'operator', 'viewer')),
    granted_by      name NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (organization_id, member)
);
COMMENT ON TABLE fleet.organization_members IS 'Who holds which application role (administrator, operator, viewer) in which organization; a member sees only its own rows';
