-- pg_dump keeps user data of extension tables only when asked: register
-- every table that holds user data, and the sequences behind them.
SELECT pg_catalog.pg_extension_config_dump('fleet.organizations', 'WHERE id <> ''root''');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_templates', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.template_contents', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.edge_manifests', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_group_certificates', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operation_errors', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_batches', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_list_columns', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.command_windows', '');
SELECT pg_catalog.pg_extension_config_dump('fleet_internal.delivery_blocks', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.organization_members', '');
