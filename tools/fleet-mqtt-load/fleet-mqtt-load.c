/*-------------------------------------------------------------------------
 *
 * fleet-mqtt-load.c
 *	  Many devices at once for the MQTT endpoint's benchmark: one process
 *	  keeps thousands of MQTT device sessions (libmosquitto, TLS, valid SAS
 *	  tokens derived from an enrollment group key) and answers direct
 *	  methods at once, as fleet-sim answers commands through SQL, and counts
 *	  the desired-property patches it receives.
 *
 *	  fleet-mqtt-load --ids FILE --group-key KEY --hub HUB --port PORT --cafile CA
 *
 * FILE holds one device id per line.  Every 10 ms (and at the end) it
 * writes a line "<unix time> connected=N listening=N methods=N patches=N"
 * to --status FILE (default stdout), which the benchmark reads.  It runs
 * until SIGTERM.
 *
 * The sessions share one thread: an epoll set over their sockets drives
 * libmosquitto's loop_read/loop_write/loop_misc, so ten thousand sessions
 * cost ten thousand sockets, no threads, and work only for those with
 * something to read.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <sys/epoll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <stdint.h>

#define lengthof(array) (sizeof(array) / sizeof((array)[0]))
#include <openssl/evp.h>
#include <openssl/hmac.h>

typedef struct Device
{
	struct mosquitto *session;
	char	   *id;
	bool		connected;
	int			subscribed;		/* SUBACKs received */
} Device;

static struct
{
	const char *ids_file;
	const char *group_key;
	const char *hub;
	const char *host;
	int			port;
	const char *cafile;
	const char *status_file;
	int			connect_rate;	/* new sessions per second */
} options = {.host = "localhost", .connect_rate = 2000};

static long n_connected,
			n_listening,
			n_methods,
			n_patches;
static volatile sig_atomic_t stop_requested = 0;

static void
handle_stop(int signo)
{
	(void) signo;
	stop_requested = 1;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* base64 of len bytes into out (at least 4 * ((len + 2) / 3) + 1). */
static void
base64(const unsigned char *in, int len, char *out)
{
	EVP_EncodeBlock((unsigned char *) out, in, len);
}

/* URL-encodes in into out. */
static void
url_encode(const char *in, char *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *in; in++)
	{
		unsigned char c = (unsigned char) *in;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~')
			*out++ = c;
		else
		{
			*out++ = '%';
			*out++ = hex[c >> 4];
			*out++ = hex[c & 15];
		}
	}
	*out = '\0';
}

/* The SAS token of a device, as the SDKs make it, valid for a day. */
static void
device_token(const unsigned char *group_key, int group_key_len, const char *id, char *out, size_t size)
{
	unsigned char device_key[32];
	unsigned int len = 0;
	char		resource[512],
				encoded[1024],
				to_sign[1200],
				signature64[64],
				signature_encoded[128];
	unsigned char signature[32];
	long		expiry = (long) time(NULL) + 86400;

	HMAC(EVP_sha256(), group_key, group_key_len, (const unsigned char *) id, strlen(id), device_key, &len);
	snprintf(resource, sizeof(resource), "%s/devices/%s", options.hub, id);
	url_encode(resource, encoded);
	snprintf(to_sign, sizeof(to_sign), "%s\n%ld", encoded, expiry);
	HMAC(EVP_sha256(), device_key, 32, (const unsigned char *) to_sign, strlen(to_sign), signature, &len);
	base64(signature, 32, signature64);
	url_encode(signature64, signature_encoded);
	snprintf(out, size, "SharedAccessSignature sr=%s&sig=%s&se=%ld", encoded, signature_encoded, expiry);
}

static void
on_connect(struct mosquitto *session, void *userdata, int rc)
{
	Device	   *device = userdata;
	const char *filters[2] = {"$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#"};

	if (rc != 0)
	{
		fprintf(stderr, "fleet-mqtt-load: %s refused: %s\n", device->id, mosquitto_connack_string(rc));
		return;
	}
	device->connected = true;
	n_connected++;
	mosquitto_subscribe_multiple(session, NULL, 2, (char *const *const) filters, 0, 0, NULL);
}

static void
on_subscribe(struct mosquitto *session, void *userdata, int mid, int qos_count, const int *granted)
{
	Device	   *device = userdata;

	(void) session;
	(void) mid;
	(void) qos_count;
	(void) granted;
	if (++device->subscribed == 1)
		n_listening++;
}

static void
on_disconnect(struct mosquitto *session, void *userdata, int rc)
{
	Device	   *device = userdata;

	(void) session;
	(void) rc;
	if (device->connected)
	{
		device->connected = false;
		n_connected--;
		if (device->subscribed > 0)
			n_listening--;
		device->subscribed = 0;
	}
}

/* A direct method is answered at once; a desired patch is counted. */
static void
on_message(struct mosquitto *session, void *userdata, const struct mosquitto_message *message)
{
	(void) userdata;
	if (strncmp(message->topic, "$iothub/methods/POST/", 21) == 0)
	{
		const char *rid = strstr(message->topic, "$rid=");
		char		topic[128];

		if (rid == NULL)
			return;
		snprintf(topic, sizeof(topic), "$iothub/methods/res/200/?%s", rid);
		mosquitto_publish(session, NULL, topic, 2, "{}", 0, false);
		n_methods++;
	}
	else if (strncmp(message->topic, "$iothub/twin/PATCH/properties/desired/", 38) == 0)
		n_patches++;
}

static void
write_status(FILE *out)
{
	fprintf(out, "%.3f connected=%ld listening=%ld methods=%ld patches=%ld\n",
			now_s(), n_connected, n_listening, n_methods, n_patches);
	fflush(out);
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"ids", required_argument, NULL, 'i'},
		{"group-key", required_argument, NULL, 'k'},
		{"hub", required_argument, NULL, 'H'},
		{"host", required_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"cafile", required_argument, NULL, 'c'},
		{"status", required_argument, NULL, 's'},
		{"connect-rate", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	unsigned char group_key[64];
	int			group_key_len;
	Device	   *devices = NULL;
	long		n_devices = 0,
				capacity = 0,
				next_to_connect = 0;
	char		line[256];
	FILE	   *ids;
	FILE	   *status = stdout;
	int			epoll_fd;
	struct epoll_event ready[1024];
	double		last_status = 0,
				last_misc = 0,
				start;

	while ((c = getopt_long(argc, argv, "i:k:H:h:p:c:s:r:", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'i': options.ids_file = optarg; break;
			case 'k': options.group_key = optarg; break;
			case 'H': options.hub = optarg; break;
			case 'h': options.host = optarg; break;
			case 'p': options.port = atoi(optarg); break;
			case 'c': options.cafile = optarg; break;
			case 's': options.status_file = optarg; break;
			case 'r': options.connect_rate = atoi(optarg); break;
			default:
				fprintf(stderr, "usage: fleet-mqtt-load --ids FILE --group-key KEY --hub HUB --port PORT --cafile CA [--status FILE]\n");
				return 1;
		}
	}
	if (!options.ids_file || !options.group_key || !options.hub || !options.port || !options.cafile)
	{
		fprintf(stderr, "fleet-mqtt-load: --ids, --group-key, --hub, --port and --cafile are required\n");
		return 1;
	}
	group_key_len = EVP_DecodeBlock(group_key, (const unsigned char *) options.group_key, strlen(options.group_key));
	if (group_key_len <= 0)
	{
		fprintf(stderr, "fleet-mqtt-load: the group key is not base64\n");
		return 1;
	}
	/* EVP_DecodeBlock counts the padding as bytes */
	for (const char *p = options.group_key + strlen(options.group_key); p > options.group_key && p[-1] == '='; p--)
		group_key_len--;
	if (options.status_file && (status = fopen(options.status_file, "w")) == NULL)
	{
		fprintf(stderr, "fleet-mqtt-load: cannot write %s: %s\n", options.status_file, strerror(errno));
		return 1;
	}
	if ((ids = fopen(options.ids_file, "r")) == NULL)
	{
		fprintf(stderr, "fleet-mqtt-load: cannot read %s: %s\n", options.ids_file, strerror(errno));
		return 1;
	}
	mosquitto_lib_init();
	while (fgets(line, sizeof(line), ids))
	{
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '\0')
			continue;
		if (n_devices == capacity)
		{
			capacity = capacity ? capacity * 2 : 1024;
			devices = realloc(devices, sizeof(Device) * capacity);
		}
		memset(&devices[n_devices], 0, sizeof(Device));
		devices[n_devices].id = strdup(line);
		n_devices++;
	}
	fclose(ids);
	epoll_fd = epoll_create1(0);
	signal(SIGTERM, handle_stop);
	signal(SIGINT, handle_stop);
	signal(SIGPIPE, SIG_IGN);
	start = now_s();

	while (!stop_requested)
	{
		int			n_ready;
		double		now = now_s();

		/*
		 * Sessions open at --connect-rate a second, a few per pass: each
		 * connect is a blocking TLS handshake (libmosquitto finishes a
		 * non-blocking one only inside its own select() loop, which cannot
		 * take descriptors past 1024).
		 */
		for (int opened = 0;
			 opened < 50 && next_to_connect < n_devices && next_to_connect < (now - start + 0.05) * options.connect_rate;
			 opened++)
		{
			long		index = next_to_connect++;
			Device	   *device = &devices[index];
			char		username[512],
						token[1024];
			struct epoll_event event = {.events = EPOLLIN, .data.u64 = (uint64_t) index};

			device->session = mosquitto_new(device->id, true, device);
			snprintf(username, sizeof(username), "%s/%s/?api-version=2021-04-12", options.hub, device->id);
			device_token(group_key, group_key_len, device->id, token, sizeof(token));
			mosquitto_username_pw_set(device->session, username, token);
			mosquitto_tls_set(device->session, options.cafile, NULL, NULL, NULL, NULL);
			mosquitto_connect_callback_set(device->session, on_connect);
			mosquitto_subscribe_callback_set(device->session, on_subscribe);
			mosquitto_disconnect_callback_set(device->session, on_disconnect);
			mosquitto_message_callback_set(device->session, on_message);
			if (mosquitto_connect(device->session, options.host, options.port, 240) != MOSQ_ERR_SUCCESS ||
				epoll_ctl(epoll_fd, EPOLL_CTL_ADD, mosquitto_socket(device->session), &event) != 0)
				fprintf(stderr, "fleet-mqtt-load: %s cannot connect\n", device->id);
		}

		n_ready = epoll_wait(epoll_fd, ready, lengthof(ready), 10);
		if (n_ready < 0 && errno != EINTR)
			break;
		for (int r = 0; r < n_ready; r++)
		{
			struct mosquitto *session = devices[ready[r].data.u64].session;

			mosquitto_loop_read(session, 1);
			/* what the callbacks queued (answers, subscriptions) goes now */
			if (mosquitto_want_write(session))
				mosquitto_loop_write(session, 1);
		}
		if (now - last_misc >= 1.0)
		{
			for (long i = 0; i < next_to_connect; i++)
				mosquitto_loop_misc(devices[i].session);
			last_misc = now;
		}
		if (now - last_status >= 0.01)
		{
			write_status(status);
			last_status = now;
		}
	}
	write_status(status);
	for (long i = 0; i < next_to_connect; i++)
	{
		mosquitto_disconnect(devices[i].session);
		mosquitto_destroy(devices[i].session);
	}
	mosquitto_lib_cleanup();
	return 0;
}
