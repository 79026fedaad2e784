\set SHOW_CONTEXT never
-- Organizations form a tree under root.
SELECT fleet.create_organization('contoso', 'Contoso');
SELECT fleet.create_organization('contoso-east', 'Contoso East', 'contoso');
SELECT fleet.create_organization('contoso-west', 'Contoso West', 'contoso');
SELECT fleet.create_organization('fabrikam', 'Fabrikam', 'root');

SELECT id, display_name, parent_id, path FROM fleet.organizations ORDER BY path;
SELECT * FROM fleet.organization_subtree('contoso') ORDER BY 1;
SELECT * FROM fleet.organization_subtree('contoso-east') ORDER BY 1;
SELECT count(*) FROM fleet.organization_subtree('root');

-- refusals
SELECT fleet.create_organization('contoso', 'Again');
SELECT fleet.create_organization('north', 'North', 'no-such-parent');
SELECT fleet.create_organization('has space', 'Bad id');
SELECT fleet.create_organization(NULL, 'No id');
SELECT fleet.create_organization(repeat('x', 129), 'Too long');
SELECT fleet.create_organization('blank', '  ');
SELECT fleet_internal.require_organization('nowhere');

-- root stays the only organization without a parent
\set VERBOSITY terse
INSERT INTO fleet.organizations (id, display_name, parent_id, path) VALUES ('orphan', 'Orphan', NULL, '{orphan}');
