/*
 * sas_token.c
 *		Parsing and verifying the SAS tokens of the Azure IoT device SDKs.
 *
 * A token signs "<sr>\n<se>" with HMAC-SHA256 under the device's key.  The
 * SDKs URL-encode sr for IoT Hub ("hub%2Fdevices%2Fid") but not for the
 * provisioning service ("scope/registrations/id"), and sign it as they
 * send it: so the signature is checked over sr as sent, and the resource
 * compared decoded.
 */
#include "sas_token.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char prefix[] = "SharedAccessSignature ";

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* URL-decodes [in, in + len) into out; false when it does not fit or a
 * %-escape is broken. */
static bool
url_decode(const char *in, size_t len, char *out, size_t out_size)
{
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = in[i];

		if (c == '%')
		{
			int			hi,
						lo;

			if (i + 2 >= len)
				return false;
			hi = hex_value(in[i + 1]);
			lo = hex_value(in[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (char) (hi * 16 + lo);
			i += 2;
		}
		else if (c == '+')
			c = ' ';
		if (c == '\0' || o + 1 >= out_size)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

int
sas_base64_decode(const char *in, unsigned char *out, size_t out_size)
{
	size_t		len = strlen(in);
	unsigned char buffer[128];
	int			n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(buffer))
		return -1;
	n = EVP_DecodeBlock(buffer, (const unsigned char *) in, (int) len);
	if (n < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as bytes */
	if (in[len - 1] == '=')
		n--;
	if (in[len - 2] == '=')
		n--;
	if ((size_t) n > out_size)
		return -1;
	memcpy(out, buffer, n);
	return n;
}

bool
sas_token_parse(const char *password, SasToken *token)
{
	const char *p;
	bool		have_sr = false,
				have_sig = false,
				have_se = false;

	memset(token, 0, sizeof(*token));
	if (password == NULL || strncmp(password, prefix, sizeof(prefix) - 1) != 0)
		return false;
	p = password + sizeof(prefix) - 1;
	while (*p)
	{
		const char *end = strchr(p, '&');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t		key_len,
					value_len;
		const char *value;

		if (eq == NULL)
			return false;
		key_len = eq - p;
		value = eq + 1;
		value_len = len - key_len - 1;
		if (key_len == 2 && strncmp(p, "sr", 2) == 0)
		{
			if (value_len >= sizeof(token->resource_sent) ||
				!url_decode(value, value_len, token->resource, sizeof(token->resource)))
				return false;
			memcpy(token->resource_sent, value, value_len);
			token->resource_sent[value_len] = '\0';
			have_sr = true;
		}
		else if (key_len == 3 && strncmp(p, "sig", 3) == 0)
		{
			char		sig64[128];
			int			n;

			if (!url_decode(value, value_len, sig64, sizeof(sig64)))
				return false;
			/* "+" decoded as a space: base64 had it */
			for (char *s = sig64; *s; s++)
				if (*s == ' ')
					*s = '+';
			n = sas_base64_decode(sig64, token->signature, sizeof(token->signature));
			if (n <= 0)
				return false;
			token->signature_len = n;
			have_sig = true;
		}
		else if (key_len == 2 && strncmp(p, "se", 2) == 0)
		{
			char	   *stop;
			long long	se;

			if (value_len == 0 || value_len >= sizeof(token->expiry_text))
				return false;
			memcpy(token->expiry_text, value, value_len);
			token->expiry_text[value_len] = '\0';
			se = strtoll(token->expiry_text, &stop, 10);
			if (*stop != '\0' || se <= 0)
				return false;
			token->expiry = (time_t) se;
			have_se = true;
		}
		/* skn and anything else: not part of the check */
		p += len;
		if (*p == '&')
			p++;
	}
	return have_sr && have_sig && have_se;
}

bool
sas_token_signed_with(const SasToken *token, const unsigned char *key, size_t key_len)
{
	char		to_sign[sizeof(token->resource_sent) + sizeof(token->expiry_text) + 2];
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	int			n;

	n = snprintf(to_sign, sizeof(to_sign), "%s\n%s", token->resource_sent, token->expiry_text);
	if (n < 0 || (size_t) n >= sizeof(to_sign))
		return false;
	if (HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) to_sign, (size_t) n,
			 digest, &digest_len) == NULL)
		return false;
	if (digest_len != token->signature_len)
		return false;
	return CRYPTO_memcmp(digest, token->signature, digest_len) == 0;
}

void
sas_derive_device_key(const unsigned char *group_key, size_t group_key_len,
					  const char *device_id, unsigned char out[32])
{
	unsigned int len = 0;

	HMAC(EVP_sha256(), group_key, (int) group_key_len,
		 (const unsigned char *) device_id, strlen(device_id), out, &len);
}
