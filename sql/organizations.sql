\set SHOW_CONTEXT never
-- Organizations form a tree under root.
SELECT fleet.create_organization('contoso', 'Contoso') ->> 'id';
SELECT fleet.create_organization('contoso-east', 'Contoso East', 'contoso') ->> 'id';
SELECT fleet.create_organization('contoso-west', 'Contoso West', 'contoso') ->> 'id';
SELECT fleet.create_organization('fabrikam', 'Fabrikam', 'root') ->> 'id';

SELECT id, display_name, parent_id, path FROM fleet.organizations ORDER BY path;
SELECT id, display_name, parent_id FROM fleet.list_organizations('contoso');
SELECT id FROM fleet.list_organizations('contoso-east');
SELECT count(*) FROM fleet.list_organizations();

-- refusals
SELECT fleet.create_organization('contoso', 'Again') ->> 'id';
SELECT fleet.create_organization('north', 'North', 'no-such-parent') ->> 'id';
SELECT fleet.create_organization('has space', 'Bad id') ->> 'id';
SELECT fleet.create_organization(NULL, 'No id') ->> 'id';
SELECT fleet.create_organization(repeat('x', 129), 'Too long') ->> 'id';
SELECT fleet.create_organization('blank', '  ') ->> 'id';
SELECT fleet_internal.require_organization('nowhere');

-- root stays the only organization without a parent
\set VERBOSITY terse
INSERT INTO fleet.organizations (id, display_name, parent_id, path) VALUES ('orphan', 'Orphan', NULL, '{orphan}');

-- an organization as JSON; renamed; deleted once it holds nothing
SELECT fleet.get_organization('contoso-east');
SELECT fleet.get_organization('nowhere');
SELECT fleet.update_organization('contoso-west', '{"displayName": "Contoso West Coast"}');
SELECT fleet.update_organization('contoso-west', '{"parent": "fabrikam"}');
SELECT fleet.update_organization('contoso-west', '{"name": "x"}');
SELECT fleet.update_organization('contoso-west', '{"displayName": " "}');
SELECT fleet.update_organization('contoso-west', '{"displayName": 7}');
SELECT fleet.update_organization('contoso-west', '[]');
SELECT fleet.update_organization('contoso-west', '{"displayName": "Contoso West"}') ->> 'displayName';
SELECT fleet.create_organization('short-lived', 'Short-lived', 'fabrikam') ->> 'id';
SELECT fleet.delete_organization('contoso');
SELECT fleet.delete_organization('root');
SELECT fleet.delete_organization('short-lived');
SELECT fleet.get_organization('short-lived');
SELECT count(*) AS its_groups_left FROM fleet.enrollment_groups WHERE organization_id = 'short-lived';
-- the 0.1 name, deprecated in 0.2, is gone in 0.4
SELECT * FROM fleet.organization_subtree('contoso') ORDER BY 1;
