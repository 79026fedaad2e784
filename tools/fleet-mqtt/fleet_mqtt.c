/*
 * fleet_mqtt.c
 *		A mosquitto plugin that makes the broker an IoT Hub-compatible device
 *		endpoint for pg_fleet: it authenticates devices by SAS token, keeps
 *		each to its own traffic, and hands what they send to the bridge
 *		(tools/fleet-bridge), which serves it from the database.
 *
 * IoT Hub's "$iothub/..." topics carry no device id, so a plain broker would
 * deliver one device's method call or twin answer to every device
 * subscribed to the same filter.  Here nothing a device publishes is routed
 * by subscription: each message goes to the bridge alone (tagged with the
 * client it came from), and each answer of the bridge goes to the one
 * client it names.  Devices publish only to the topics of the IoT Hub and
 * provisioning protocols.
 *
 * The bridge talks to the plugin over the broker itself, as a client with
 * its own id and password (a unix-socket listener): "fleet/up" carries
 * device events to it (into its persistent session, where the broker keeps
 * them, QoS 0 included, while it is away: a bridge that restarts misses
 * nothing the broker kept), "fleet/down/many" carries its answers (many
 * to a message; "fleet/down" one, as 0.5's bridge sent them),
 * "fleet/directory" the devices and enrollment groups to authenticate
 * against, and "fleet/hello" asks for every connected device again.  No callback here blocks: the broker's loop never waits on the
 * database.
 *
 * Options (plugin_opt_<name> in mosquitto.conf):
 *	bridge_client_id	the bridge's client id (default fleet-bridge)
 *	bridge_password		the bridge's password (required)
 *	hub_host_name		the host name devices' tokens must name (optional)
 *	id_scope			the ID scope provisioning tokens must name (optional)
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mosquitto.h>

#include "directory.h"
#include "sas_token.h"

#define LISTENS_METHODS 1
#define LISTENS_DESIRED 2

/*
 * The largest message a device may send, as IoT Hub's (256 KB): the broker
 * takes larger ones from the bridge (its directory).
 */
#define DEVICE_MESSAGE_MAX (256 * 1024)

typedef enum ClientKind
{
	CLIENT_DEVICE,
	CLIENT_PROVISIONING,
	CLIENT_BRIDGE
} ClientKind;

/* A connected client the plugin let in, by client id. */
typedef struct Client
{
	struct Client *next;		/* hash chain */
	struct mosquitto *connection;
	ClientKind	kind;
	time_t		expiry;			/* its token's; 0: none (the bridge) */
	int			listens;		/* LISTENS_* it subscribed to */
	char		group[256];		/* provisioning: the group whose key signed */
	bool		kick;			/* to be disconnected at the next tick */
	char		id[];
} Client;

static struct
{
	mosquitto_plugin_id_t *identifier;
	char	   *bridge_client_id;
	char	   *bridge_password;
	char	   *hub_host_name;
	char	   *id_scope;
	Directory  *directory;
	Client	  **buckets;
	size_t		n_buckets;
	size_t		n_clients;
	time_t		last_check;
	unsigned long refusals;
} plugin;

static void emit(char kind, const char *client_id, const char *field1, const char *field2,
				 const void *body, size_t body_len);

/* ---------------------------------------------------------------------
 * Clients */

static size_t
client_bucket(const char *id)
{
	uint64_t	h = 1469598103934665603ULL;

	for (; *id; id++)
	{
		h ^= (unsigned char) *id;
		h *= 1099511628211ULL;
	}
	return h & (plugin.n_buckets - 1);
}

static Client *
client_find(const char *id)
{
	if (id == NULL)
		return NULL;
	for (Client *c = plugin.buckets[client_bucket(id)]; c; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

/* The client of this connection, or NULL (a client taken over by a newer
 * connection with its id is not it any more). */
static Client *
client_of(struct mosquitto *connection)
{
	Client	   *c = client_find(mosquitto_client_id(connection));

	return (c && c->connection == connection) ? c : NULL;
}

static Client *
client_add(const char *id, struct mosquitto *connection, ClientKind kind)
{
	Client	   *c = client_find(id);

	if (c == NULL)
	{
		size_t		b = client_bucket(id);

		c = calloc(1, sizeof(Client) + strlen(id) + 1);
		if (c == NULL)
			return NULL;
		strcpy(c->id, id);
		c->next = plugin.buckets[b];
		plugin.buckets[b] = c;
		plugin.n_clients++;
	}
	else if (c->kind == CLIENT_DEVICE && kind != CLIENT_DEVICE)
	{
		/*
		 * A device's id taken over by a provisioning session: its hub
		 * session ends, and its disconnect would no longer be recognized
		 * as its own.
		 */
		emit('D', c->id, NULL, NULL, NULL, 0);
	}
	c->connection = connection;
	c->kind = kind;
	c->expiry = 0;
	c->listens = 0;
	c->group[0] = '\0';
	c->kick = false;
	return c;
}

static void
client_remove(Client *client)
{
	Client	  **p = &plugin.buckets[client_bucket(client->id)];

	for (; *p; p = &(*p)->next)
		if (*p == client)
		{
			*p = client->next;
			plugin.n_clients--;
			free(client);
			return;
		}
}

/* ---------------------------------------------------------------------
 * To the bridge */

/*
 * One event for the bridge on "fleet/up": lines "<kind>", "<client id>",
 * then the kind's fields, then the body (which may hold anything).
 */
static void
emit(char kind, const char *client_id, const char *field1, const char *field2,
	 const void *body, size_t body_len)
{
	size_t		len = 2 + strlen(client_id) + 1 + (field1 ? strlen(field1) + 1 : 0) +
		(field2 ? strlen(field2) + 1 : 0) + body_len;
	char	   *buffer = malloc(len + 1);
	char	   *p = buffer;

	if (buffer == NULL)
		return;
	p += sprintf(p, "%c\n%s\n", kind, client_id);
	if (field1)
		p += sprintf(p, "%s\n", field1);
	if (field2)
		p += sprintf(p, "%s\n", field2);
	if (body_len)
		memcpy(p, body, body_len);
	/*
	 * Into the bridge's session, kept while it is away (the broker queues
	 * QoS 0 for it: queue_qos0_messages); QoS 0 spares a PUBACK a message
	 * on the local socket, and a bound on how many may be in flight.
	 */
	mosquitto_broker_publish_copy(plugin.bridge_client_id, "fleet/up", (int) len, buffer, 0, false, NULL);
	free(buffer);
}

static void
emit_connection(const Client *client)
{
	char		listens[16];

	snprintf(listens, sizeof(listens), "%d", client->listens);
	emit('C', client->id, listens, NULL, NULL, 0);
}

/* A client id fit for a log line: printable, cut. */
static void
printable_id(const char *id, char *out, size_t size)
{
	size_t		o = 0;

	for (; id && *id && o + 1 < size; id++)
		out[o++] = isprint((unsigned char) *id) ? *id : '?';
	out[o] = '\0';
}

/* A refusal: a log line and a count at the bridge; never the token. */
static void
refuse(const char *client_id, const char *reason, const char *detail)
{
	char		id[129];

	printable_id(client_id, id, sizeof(id));
	plugin.refusals++;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "fleet-mqtt: refused client \"%s\": %s%s%s",
						 id, reason, detail ? ": " : "", detail ? detail : "");
	emit('R', id, reason, NULL, NULL, 0);
}

/* ---------------------------------------------------------------------
 * Authentication */

/* Whether the token is signed with a key derived from the group's for id. */
static bool
signed_by_group(const SasToken *token, const EnrollmentGroup *group, const char *id)
{
	bool		signed_ok = false;

	for (int k = 0; k < group->n_keys; k++)
	{
		unsigned char key[32];

		sas_derive_device_key(group->keys[k], group->key_len[k], id, key);
		/* both keys are tried, so the time does not say which matched */
		signed_ok |= sas_token_signed_with(token, key, sizeof(key));
		OPENSSL_cleanse(key, sizeof(key));
	}
	return signed_ok;
}

/*
 * The reason a device's own group does not let it in with this token, or
 * NULL when it does.
 */
static const char *
device_group_problem(const DeviceSlot *device, const SasToken *token, const char *id)
{
	const EnrollmentGroup *group = directory_group(plugin.directory, device->group);

	if (group == NULL)
		return "no enrollment group";
	if (!group->enabled)
		return "disabled enrollment group";
	if (group->n_keys == 0)
		return "X.509 enrollment group";
	if (!signed_by_group(token, group, id))
		return "wrong key";
	return NULL;
}

/* Compares the token's resource with "<a>/<middle>/<id>", ignoring case. */
static bool
resource_is(const SasToken *token, const char *a, const char *middle, const char *id)
{
	char		expected[sizeof(token->resource)];

	if (snprintf(expected, sizeof(expected), "%s/%s/%s", a, middle, id) >= (int) sizeof(expected))
		return false;
	return strcasecmp(token->resource, expected) == 0;
}

/* The first path segment of the token's resource: the hub or the scope. */
static void
resource_head(const SasToken *token, char *out, size_t size)
{
	size_t		n = strcspn(token->resource, "/");

	if (n >= size)
		n = size - 1;
	memcpy(out, token->resource, n);
	out[n] = '\0';
}

static int
authenticate_device(struct mosquitto *connection, const char *id, const char *username, const char *password)
{
	SasToken	token;
	char		head[256];
	bool		provisioning = username && strstr(username, "/registrations/") != NULL;
	const DeviceSlot *device;
	const char *problem;
	Client	   *client;
	char		group_id[256] = "";

	if (username == NULL || password == NULL)
	{
		refuse(id, "no credentials", NULL);
		return MOSQ_ERR_AUTH;
	}
	if (!sas_token_parse(password, &token))
	{
		refuse(id, "malformed token", "the password is not a SharedAccessSignature");
		return MOSQ_ERR_AUTH;
	}
	resource_head(&token, head, sizeof(head));
	if (provisioning ? !resource_is(&token, head, "registrations", id) : !resource_is(&token, head, "devices", id))
	{
		refuse(id, "token of another device", NULL);
		return MOSQ_ERR_AUTH;
	}
	if (provisioning && plugin.id_scope && strcasecmp(head, plugin.id_scope) != 0)
	{
		refuse(id, "wrong ID scope", head);
		return MOSQ_ERR_AUTH;
	}
	if (!provisioning && plugin.hub_host_name && strcasecmp(head, plugin.hub_host_name) != 0)
	{
		refuse(id, "wrong hub", head);
		return MOSQ_ERR_AUTH;
	}
	if (token.expiry <= time(NULL))
	{
		refuse(id, "expired token", NULL);
		return MOSQ_ERR_AUTH;
	}

	device = directory_device(plugin.directory, id);
	if (device != NULL)
	{
		problem = device_group_problem(device, &token, id);
		if (problem)
		{
			refuse(id, problem, NULL);
			return MOSQ_ERR_AUTH;
		}
		snprintf(group_id, sizeof(group_id), "%s", directory_group(plugin.directory, device->group)->id);
	}
	else if (!provisioning)
	{
		refuse(id, "unknown device", NULL);
		return MOSQ_ERR_AUTH;
	}
	else
	{
		/*
		 * Not registered: provisioning may register it, with the group whose
		 * key signed (the bridge decides whether that group lets it).
		 */
		for (int g = 0; plugin.directory && g < plugin.directory->n_groups; g++)
		{
			const EnrollmentGroup *group = &plugin.directory->groups[g];

			if (group->enabled && group->n_keys > 0 && signed_by_group(&token, group, id))
			{
				snprintf(group_id, sizeof(group_id), "%s", group->id);
				break;
			}
		}
		if (group_id[0] == '\0')
		{
			refuse(id, "unknown device", "no enabled enrollment group's key signed its token");
			return MOSQ_ERR_AUTH;
		}
	}

	client = client_add(id, connection, provisioning ? CLIENT_PROVISIONING : CLIENT_DEVICE);
	if (client == NULL)
		return MOSQ_ERR_NOMEM;
	client->expiry = token.expiry;
	snprintf(client->group, sizeof(client->group), "%s", group_id);
	if (!provisioning)
		emit_connection(client);
	return MOSQ_ERR_SUCCESS;
}

static int
on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);

	(void) event;
	(void) userdata;
	if (id == NULL || id[0] == '\0')
	{
		refuse("", "no client id", NULL);
		return MOSQ_ERR_AUTH;
	}
	if (strcmp(id, plugin.bridge_client_id) == 0)
	{
		size_t		len = ed->password ? strlen(ed->password) : 0;

		if (len != strlen(plugin.bridge_password) ||
			CRYPTO_memcmp(ed->password, plugin.bridge_password, len) != 0)
		{
			refuse(id, "wrong bridge password", NULL);
			return MOSQ_ERR_AUTH;
		}
		return client_add(id, ed->client, CLIENT_BRIDGE) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
	}
	return authenticate_device(ed->client, id, ed->username, ed->password);
}

/* ---------------------------------------------------------------------
 * Topics */

static bool
starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "devices/<id>/<rest>" for this client's id. */
static bool
own_device_topic(const char *topic, const char *id, const char *rest)
{
	size_t		n = strlen(id);

	return starts_with(topic, "devices/") && strncmp(topic + 8, id, n) == 0 &&
		starts_with(topic + 8 + n, rest);
}

static bool
device_may_publish(const Client *c, const char *topic)
{
	if (c->kind == CLIENT_PROVISIONING)
		return starts_with(topic, "$dps/registrations/PUT/iotdps-register/") ||
			starts_with(topic, "$dps/registrations/GET/iotdps-get-operationstatus/");
	return starts_with(topic, "$iothub/methods/res/") ||
		starts_with(topic, "$iothub/twin/GET/") ||
		starts_with(topic, "$iothub/twin/PATCH/properties/reported/") ||
		own_device_topic(topic, c->id, "/messages/events/");
}

/* What a subscription adds to what the device listens for; -1: refused. */
static int
device_subscription(const Client *c, const char *filter)
{
	if (c->kind == CLIENT_PROVISIONING)
		return strcmp(filter, "$dps/registrations/res/#") == 0 ? 0 : -1;
	if (strcmp(filter, "$iothub/methods/POST/#") == 0)
		return LISTENS_METHODS;
	if (strcmp(filter, "$iothub/twin/PATCH/properties/desired/#") == 0)
		return LISTENS_DESIRED;
	if (strcmp(filter, "$iothub/twin/res/#") == 0 || own_device_topic(filter, c->id, "/messages/devicebound/"))
		return 0;
	return -1;
}

static int
on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	Client	   *c = client_of(ed->client);
	int			adds;

	(void) event;
	(void) userdata;
	if (c == NULL)
		return MOSQ_ERR_ACL_DENIED;
	if (c->kind == CLIENT_BRIDGE)
		return starts_with(ed->topic, "fleet/") ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;

	switch (ed->access)
	{
		case MOSQ_ACL_WRITE:
			if (device_may_publish(c, ed->topic))
				return MOSQ_ERR_SUCCESS;
			refuse(c->id, "topic not allowed", ed->topic);
			return MOSQ_ERR_ACL_DENIED;
		case MOSQ_ACL_SUBSCRIBE:
			adds = device_subscription(c, ed->topic);
			if (adds < 0)
			{
				refuse(c->id, "subscription not allowed", ed->topic);
				return MOSQ_ERR_ACL_DENIED;
			}
			if ((c->listens | adds) != c->listens)
			{
				c->listens |= adds;
				emit_connection(c);
			}
			return MOSQ_ERR_SUCCESS;
		case MOSQ_ACL_UNSUBSCRIBE:
			adds = device_subscription(c, ed->topic);
			if (adds > 0 && (c->listens & adds))
			{
				c->listens &= ~adds;
				emit_connection(c);
			}
			return MOSQ_ERR_SUCCESS;
		case MOSQ_ACL_READ:
			/* only what the plugin sends it, which goes by client id */
			return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_ACL_DENIED;
}

/* ---------------------------------------------------------------------
 * From the bridge */

/* A message from the bridge to the one client it names. */
static void
deliver(const char *id, const char *topic, const char *body, size_t body_len)
{
	Client	   *c = client_find(id);

	if (c == NULL || c->kind == CLIENT_BRIDGE)
		return;
	/* a method or patch only to a device listening for it */
	if (starts_with(topic, "$iothub/methods/POST/") && !(c->listens & LISTENS_METHODS))
		return;
	if (starts_with(topic, "$iothub/twin/PATCH/properties/desired/") && !(c->listens & LISTENS_DESIRED))
		return;
	mosquitto_broker_publish_copy(id, topic, (int) body_len, body, 0, false, NULL);
}

/*
 * The next line of a message from the bridge, into out (at most size - 1
 * bytes); where the rest begins, or NULL when there is no such line.
 */
static const char *
take_line(const char *p, const char *end, char *out, size_t size)
{
	const char *line_end = memchr(p, '\n', end - p);

	if (line_end == NULL || (size_t) (line_end - p) >= size)
		return NULL;
	memcpy(out, p, line_end - p);
	out[line_end - p] = '\0';
	return line_end + 1;
}

/* "fleet/down": "<client id>\n<topic>\n<body>", one message (0.5's bridge). */
static void
deliver_one(const char *payload, size_t len)
{
	const char *end = payload + len;
	const char *p;
	char		id[256];
	char		topic[1024];

	if ((p = take_line(payload, end, id, sizeof(id))) == NULL ||
		(p = take_line(p, end, topic, sizeof(topic))) == NULL)
		return;
	deliver(id, topic, p, end - p);
}

/*
 * "fleet/down/many": records of "<client id>\n<topic>\n<body length>\n<body>".
 * A record that does not parse ends the message: what follows it cannot be
 * told apart (the bridge never sends one).
 */
static void
deliver_many(const char *payload, size_t len)
{
	const char *end = payload + len;
	const char *p = payload;

	while (p < end)
	{
		char		id[256];
		char		topic[1024];
		char		length_text[24];
		char	   *length_end;
		unsigned long long body_len;

		if ((p = take_line(p, end, id, sizeof(id))) == NULL ||
			(p = take_line(p, end, topic, sizeof(topic))) == NULL ||
			(p = take_line(p, end, length_text, sizeof(length_text))) == NULL)
			break;
		body_len = strtoull(length_text, &length_end, 10);
		if (length_text[0] == '\0' || *length_end != '\0' || body_len > (unsigned long long) (end - p))
			break;
		deliver(id, topic, p, (size_t) body_len);
		p += body_len;
	}
	if (p != end)
		mosquitto_log_printf(MOSQ_LOG_ERR, "fleet-mqtt: a message from the bridge on \"fleet/down/many\" has a record "
							 "that does not parse; the records after it are dropped");
}

/* Whether a connected client's device still may be connected, as the
 * directory now stands; NULL when it may. */
static const char *
client_problem(const Client *c)
{
	const DeviceSlot *device;
	const EnrollmentGroup *group;

	if (c->kind != CLIENT_DEVICE)
		return NULL;
	device = directory_device(plugin.directory, c->id);
	if (device == NULL)
		return "device deleted";
	group = directory_group(plugin.directory, device->group);
	if (group == NULL || !group->enabled)
		return "disabled enrollment group";
	return NULL;
}

static void
replace_directory(const char *payload, size_t len)
{
	Directory  *next = directory_parse(payload, len);

	if (next == NULL)
	{
		mosquitto_log_printf(MOSQ_LOG_ERR, "fleet-mqtt: the bridge sent a directory that is not one; keeping the last");
		return;
	}
	directory_free(plugin.directory);
	plugin.directory = next;
	mosquitto_log_printf(MOSQ_LOG_INFO, "fleet-mqtt: directory of %zu devices and %d enrollment groups (%zu bytes)",
						 next->n_devices, next->n_groups, directory_bytes(next));
	/* connected devices deleted or disabled since go at the next tick */
	for (size_t b = 0; b < plugin.n_buckets; b++)
		for (Client *c = plugin.buckets[b]; c; c = c->next)
		{
			const char *problem = client_problem(c);

			if (problem)
			{
				c->kick = true;
				refuse(c->id, problem, "disconnected");
			}
		}
}

static void
say_hello(void)
{
	for (size_t b = 0; b < plugin.n_buckets; b++)
		for (Client *c = plugin.buckets[b]; c; c = c->next)
			if (c->kind == CLIENT_DEVICE)
				emit_connection(c);
}

static int
on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	Client	   *c = client_of(ed->client);

	(void) event;
	(void) userdata;
	if (c == NULL)
		return MOSQ_ERR_ACL_DENIED;
	if (c->kind == CLIENT_BRIDGE)
	{
		if (strcmp(ed->topic, "fleet/down/many") == 0)
			deliver_many(ed->payload, ed->payloadlen);
		else if (strcmp(ed->topic, "fleet/down") == 0)
			deliver_one(ed->payload, ed->payloadlen);
		else if (strcmp(ed->topic, "fleet/directory") == 0)
			replace_directory(ed->payload, ed->payloadlen);
		else if (strcmp(ed->topic, "fleet/hello") == 0)
			say_hello();
	}
	else if (ed->payloadlen > DEVICE_MESSAGE_MAX)
		refuse(c->id, "message too large", ed->topic);
	else if (c->kind == CLIENT_PROVISIONING)
		emit('P', c->id, c->group, ed->topic, ed->payload, ed->payloadlen);
	else if (own_device_topic(ed->topic, c->id, "/messages/events/"))
		/* telemetry: counted, not stored (acknowledged all the same) */
		emit('T', c->id, NULL, NULL, NULL, 0);
	else
		emit('M', c->id, ed->topic, NULL, ed->payload, ed->payloadlen);

	/* routed by the plugin alone: never by subscription */
	return MOSQ_ERR_ACL_DENIED;
}

/* ---------------------------------------------------------------------
 * Time and disconnection */

static int
on_tick(int event, void *event_data, void *userdata)
{
	time_t		now = time(NULL);
	char	  **kicks = NULL;
	size_t		n_kicks = 0;

	(void) event;
	(void) event_data;
	(void) userdata;
	if (now == plugin.last_check)
		return MOSQ_ERR_SUCCESS;
	plugin.last_check = now;
	for (size_t b = 0; b < plugin.n_buckets; b++)
		for (Client *c = plugin.buckets[b]; c; c = c->next)
		{
			if (c->kind != CLIENT_BRIDGE && c->expiry != 0 && c->expiry <= now && !c->kick)
			{
				/* the SDKs renew their token before it runs out */
				c->kick = true;
				refuse(c->id, "expired token", "disconnected");
			}
			if (c->kick)
			{
				char	  **more = realloc(kicks, sizeof(char *) * (n_kicks + 1));

				if (more == NULL)
					break;
				kicks = more;
				kicks[n_kicks++] = strdup(c->id);
				c->kick = false;
			}
		}

	/*
	 * Kicked after the walk: a kick disconnects the client at once, and its
	 * disconnect event removes it from the table being walked.
	 */
	for (size_t i = 0; i < n_kicks; i++)
	{
		if (kicks[i])
			mosquitto_kick_client_by_clientid(kicks[i], false);
		free(kicks[i]);
	}
	free(kicks);
	return MOSQ_ERR_SUCCESS;
}

static int
on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	Client	   *c = client_of(ed->client);

	(void) event;
	(void) userdata;
	if (c == NULL)
		return MOSQ_ERR_SUCCESS;
	if (c->kind == CLIENT_DEVICE)
		emit('D', c->id, NULL, NULL, NULL, 0);
	client_remove(c);
	return MOSQ_ERR_SUCCESS;
}

/* ---------------------------------------------------------------------
 * Loading */

int
mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++)
		if (supported_versions[i] == 5)
			return 5;
	return -1;
}

int
mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
					  int option_count)
{
	(void) userdata;
	memset(&plugin, 0, sizeof(plugin));
	plugin.identifier = identifier;
	for (int i = 0; i < option_count; i++)
	{
		if (strcmp(options[i].key, "bridge_client_id") == 0)
			plugin.bridge_client_id = strdup(options[i].value);
		else if (strcmp(options[i].key, "bridge_password") == 0)
			plugin.bridge_password = strdup(options[i].value);
		else if (strcmp(options[i].key, "hub_host_name") == 0)
			plugin.hub_host_name = strdup(options[i].value);
		else if (strcmp(options[i].key, "id_scope") == 0)
			plugin.id_scope = strdup(options[i].value);
		else
		{
			mosquitto_log_printf(MOSQ_LOG_ERR, "fleet-mqtt: unknown option plugin_opt_%s", options[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	if (plugin.bridge_password == NULL || strlen(plugin.bridge_password) < 16)
	{
		mosquitto_log_printf(MOSQ_LOG_ERR,
							 "fleet-mqtt: plugin_opt_bridge_password must be set, to at least 16 characters");
		return MOSQ_ERR_INVAL;
	}
	if (plugin.bridge_client_id == NULL)
		plugin.bridge_client_id = strdup("fleet-bridge");
	plugin.n_buckets = 1 << 16;
	plugin.buckets = calloc(plugin.n_buckets, sizeof(Client *));
	if (plugin.buckets == NULL)
		return MOSQ_ERR_NOMEM;

	if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL) ||
		mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL) ||
		mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, NULL) ||
		mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, NULL) ||
		mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL))
		return MOSQ_ERR_UNKNOWN;
	mosquitto_log_printf(MOSQ_LOG_INFO, "fleet-mqtt: loaded; waiting for the bridge \"%s\"", plugin.bridge_client_id);
	return MOSQ_ERR_SUCCESS;
}

int
mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void) userdata;
	(void) options;
	(void) option_count;
	mosquitto_callback_unregister(plugin.identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin.identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin.identifier, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin.identifier, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(plugin.identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	for (size_t b = 0; b < plugin.n_buckets; b++)
		while (plugin.buckets[b])
			client_remove(plugin.buckets[b]);
	free(plugin.buckets);
	directory_free(plugin.directory);
	free(plugin.bridge_client_id);
	free(plugin.bridge_password);
	free(plugin.hub_host_name);
	free(plugin.id_scope);
	return MOSQ_ERR_SUCCESS;
}
