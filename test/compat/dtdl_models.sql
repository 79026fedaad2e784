-- Run by dtdl_models.sh, after it has loaded model_file (path, body).
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE TEMP TABLE model (path text PRIMARY KEY, doc jsonb, root text, v2 boolean,
                         outcome text, error text, expected int, actual int);
DO $$
DECLARE
    f record;
    d jsonb;
BEGIN
    FOR f IN SELECT * FROM model_file LOOP
        BEGIN
            d := f.body::jsonb;
        EXCEPTION WHEN others THEN
            d := NULL;
        END;
        INSERT INTO model (path, doc) VALUES (f.path, d);
    END LOOP;
END
$$;
UPDATE model SET root = CASE jsonb_typeof(doc) WHEN 'object' THEN doc ->> '@id' WHEN 'array' THEN doc -> 0 ->> '@id' END,
                 v2 = coalesce((CASE jsonb_typeof(doc) WHEN 'array' THEN doc -> 0 ELSE doc END) -> '@context'
                               @> '"dtmi:dtdl:context;2"', false);

-- every Interface any file declares, top-level or inline, by its @id
CREATE TEMP TABLE iface AS
SELECT DISTINCT ON (i ->> '@id') i ->> '@id' AS id, i AS doc
  FROM model m, jsonb_path_query(m.doc, 'strict $.**') i
 WHERE jsonb_typeof(i) = 'object' AND i ? '@id'
   AND (i -> '@type' = '"Interface"' OR i -> '@type' @> '["Interface"]');
CREATE INDEX ON iface (id);
CREATE INDEX ON model (root);
ANALYZE iface, model;

-- An interface's contents, its extended interfaces' included.
CREATE FUNCTION pg_temp.all_contents(x jsonb, depth int DEFAULT 0) RETURNS SETOF jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
BEGIN
    RETURN QUERY SELECT c FROM jsonb_array_elements(coalesce(x -> 'contents', '[]')) c;
    IF depth > 10 THEN RETURN; END IF;
    FOR e IN SELECT v FROM jsonb_array_elements(CASE jsonb_typeof(x -> 'extends') WHEN 'array' THEN x -> 'extends'
                                                    WHEN 'null' THEN '[]' ELSE jsonb_build_array(x -> 'extends') END) v LOOP
        RETURN QUERY SELECT * FROM pg_temp.all_contents(
            CASE jsonb_typeof(e) WHEN 'object' THEN e ELSE (SELECT i.doc FROM iface i WHERE i.id = e #>> '{}') END, depth + 1);
    END LOOP;
END;
$$;
CREATE FUNCTION pg_temp.is_a(content jsonb, kinds text[]) RETURNS boolean
LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE jsonb_typeof(content -> '@type') WHEN 'array'
                                                           THEN content -> '@type' ELSE jsonb_build_array(content -> '@type') END) t
                    WHERE t = ANY (kinds))
$$;
-- What a device of this root interface can do: its telemetry, properties
-- and commands, and those of each component's interface.
CREATE FUNCTION pg_temp.expected_capabilities(x jsonb) RETURNS int
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM pg_temp.all_contents(x) c WHERE pg_temp.is_a(c, '{Telemetry,Property,Command}'))::int
         + coalesce((SELECT sum((SELECT count(*) FROM pg_temp.all_contents(
                                    CASE jsonb_typeof(c -> 'schema') WHEN 'object' THEN c -> 'schema'
                                         ELSE (SELECT i.doc FROM iface i WHERE i.id = c ->> 'schema') END) cc
                                  WHERE pg_temp.is_a(cc, '{Telemetry,Property,Command}')))
                       FROM pg_temp.all_contents(x) c WHERE pg_temp.is_a(c, '{Component}')), 0)::int
$$;

-- Which files each file needs first: the files whose root interface it
-- names (and does not declare itself), found once for all files.
CREATE TEMP TABLE dependency AS
SELECT DISTINCT m.path, o.path AS needs
  FROM model m
 CROSS JOIN LATERAL (SELECT DISTINCT s #>> '{}' AS dtmi
                       FROM jsonb_path_query(m.doc, 'strict $.**') s
                      WHERE jsonb_typeof(s) = 'string' AND (s #>> '{}') LIKE 'dtmi:%') x
  JOIN model o ON o.root = x.dtmi AND o.path <> m.path
 WHERE m.doc IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM jsonb_path_query(m.doc, 'strict $.**."@id"') own WHERE own #>> '{}' = x.dtmi);
CREATE INDEX ON dependency (path);
ANALYZE dependency;

-- Imports a file after the files it needs.
CREATE FUNCTION pg_temp.import_file(file text, depth int DEFAULT 0) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m model;
    dep text;
BEGIN
    SELECT * INTO m FROM model WHERE path = file;
    IF m.outcome IS NOT NULL OR depth > 20 THEN RETURN; END IF;
    UPDATE model SET outcome = 'importing' WHERE path = file;
    FOR dep IN SELECT d.needs FROM dependency d WHERE d.path = file LOOP
        PERFORM pg_temp.import_file(dep, depth + 1);
    END LOOP;
    BEGIN
        PERFORM fleet.import_template(m.doc);
        UPDATE model SET outcome = 'accepted' WHERE path = file;
    EXCEPTION WHEN others THEN
        UPDATE model SET outcome = 'refused', error = SQLERRM WHERE path = file;
    END;
END;
$$;
SELECT count(pg_temp.import_file(path)) FROM model WHERE doc IS NOT NULL \gset

UPDATE model m
   SET expected = pg_temp.expected_capabilities(i.doc),
       actual = (SELECT count(*) FROM fleet.template_capabilities c WHERE c.template_id = m.root)
  FROM iface i
 WHERE i.id = m.root AND m.outcome = 'accepted';

\echo
\echo DTDL model files: accepted, and capability counts that match the JSON
SELECT count(*) AS files,
       count(*) FILTER (WHERE v2) AS dtdl_v2,
       count(*) FILTER (WHERE v2 AND outcome = 'accepted') AS accepted,
       round(100.0 * count(*) FILTER (WHERE v2 AND outcome = 'accepted') / nullif(count(*) FILTER (WHERE v2), 0), 2) AS accepted_pct,
       count(*) FILTER (WHERE outcome = 'accepted' AND expected = actual) AS counts_match,
       count(*) FILTER (WHERE outcome = 'accepted' AND expected IS DISTINCT FROM actual) AS counts_differ
  FROM model;
\echo refused DTDL v2 files:
SELECT path, error FROM model WHERE v2 AND outcome IS DISTINCT FROM 'accepted' ORDER BY path;
\echo accepted files whose capability count differs from the JSON:
SELECT path, expected, actual FROM model WHERE outcome = 'accepted' AND expected IS DISTINCT FROM actual ORDER BY path;
