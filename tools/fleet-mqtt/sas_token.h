/*
 * sas_token.h
 *		IoT Hub and Device Provisioning Service SAS tokens, as the Azure IoT
 *		device SDKs send them in the MQTT password.
 */
#ifndef SAS_TOKEN_H
#define SAS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SAS_KEY_MAX 64

/* A token's parts: the resource (decoded), as sent (for the signature),
 * the signature (decoded) and the expiry. */
typedef struct SasToken
{
	char		resource[512];		/* sr, URL-decoded */
	char		resource_sent[1024];	/* sr as it is in the token */
	unsigned char signature[64];
	size_t		signature_len;
	char		expiry_text[32];	/* se as sent */
	time_t		expiry;
} SasToken;

/* Parses "SharedAccessSignature sr=...&sig=...&se=...[&skn=...]"; false
 * when it is not one. */
extern bool sas_token_parse(const char *password, SasToken *token);

/* Whether the token is signed with key (raw bytes), in constant time. */
extern bool sas_token_signed_with(const SasToken *token, const unsigned char *key, size_t key_len);

/* A device's key as DPS derives it from its enrollment group's:
 * HMAC-SHA256(group key, device id), raw. */
extern void sas_derive_device_key(const unsigned char *group_key, size_t group_key_len,
								  const char *device_id, unsigned char out[32]);

/* Decodes base64 into out (at most out_size bytes); -1 when it is not
 * base64 or too long. */
extern int	sas_base64_decode(const char *in, unsigned char *out, size_t out_size);

#endif
