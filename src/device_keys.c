/*-------------------------------------------------------------------------
 *
 * device_keys.c
 *	  SAS keys of devices, derived as Azure's Device Provisioning Service
 *	  derives them from an enrollment group key, and fresh group keys.
 *
 * A device key is base64(HMAC-SHA256(base64decode(group key), device id)),
 * the rule behind "az iot central device compute-device-key".  Keys are
 * derived on the fly, never stored, so rotating a group key rotates every
 * device key of the group at once.
 *
 * Export derives two keys for each of up to millions of devices, so the
 * HMAC is cut to its minimum: the SHA-256 states after absorbing the padded
 * group key are computed once per group key and cached in fn_extra, and each
 * device then costs one SHA-256 block for the inner hash and one for the
 * outer.  That needs copyable SHA-256 states, which OpenSSL only offers
 * through its low-level SHA256_* interface (deprecated in OpenSSL 3, still
 * shipped); the EVP interface would allocate per call.
 *
 *-------------------------------------------------------------------------
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "postgres.h"

#include <ctype.h>

#include <openssl/sha.h>

#include "common/base64.h"
#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"

#define HMAC_BLOCK_SIZE		64	/* SHA-256 block size */
#define GROUP_KEY_BYTES		64	/* what IoT Central's enrollment groups use */
#define DEVICE_KEY_CHARS	44	/* base64 of a 32-byte digest */
#define CACHED_GROUP_KEYS	2	/* export alternates device and edge keys */

/* HMAC-SHA256 with one key, ready to sign any number of messages. */
typedef struct KeyedHmac
{
	text	   *group_key;		/* the key as given, to recognise it again */
	SHA256_CTX	inner;			/* state after absorbing key XOR ipad */
	SHA256_CTX	outer;			/* state after absorbing key XOR opad */
} KeyedHmac;

typedef struct KeyCache
{
	int			next_victim;
	KeyedHmac	entries[CACHED_GROUP_KEYS];
} KeyCache;

PG_FUNCTION_INFO_V1(compute_device_key);
PG_FUNCTION_INFO_V1(generate_group_key);

/* Decode a base64 group key and prepare the two HMAC states for it. */
static void
keyed_hmac_init(KeyedHmac *hmac, text *group_key)
{
	const char *given = VARDATA_ANY(group_key);
	int			given_len = VARSIZE_ANY_EXHDR(group_key);
	char	   *b64 = palloc(given_len + 1);
	int			b64_len = 0;
	int			max_len;
	unsigned char *raw;
	int			raw_len;
	unsigned char block[HMAC_BLOCK_SIZE];
	unsigned char pad[HMAC_BLOCK_SIZE];

	/* keys pasted from elsewhere may be wrapped: ignore whitespace */
	for (int i = 0; i < given_len; i++)
		if (!isspace((unsigned char) given[i]))
			b64[b64_len++] = given[i];

	max_len = pg_b64_dec_len(b64_len);
	raw = palloc(max_len + 1);
	raw_len = pg_b64_decode(b64, b64_len, (char *) raw, max_len);
	explicit_bzero(b64, b64_len);
	pfree(b64);
	if (raw_len <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("group key is not valid base64"),
				 errhint("Pass the enrollment group's primary or secondary key exactly as fleet.enrollment_groups shows it.")));

	/* HMAC: a key longer than one block is replaced by its digest */
	memset(block, 0, sizeof(block));
	if (raw_len > HMAC_BLOCK_SIZE)
		SHA256(raw, raw_len, block);
	else
		memcpy(block, raw, raw_len);
	explicit_bzero(raw, raw_len);
	pfree(raw);

	for (int i = 0; i < HMAC_BLOCK_SIZE; i++)
		pad[i] = block[i] ^ 0x36;
	SHA256_Init(&hmac->inner);
	SHA256_Update(&hmac->inner, pad, HMAC_BLOCK_SIZE);

	for (int i = 0; i < HMAC_BLOCK_SIZE; i++)
		pad[i] = block[i] ^ 0x5c;
	SHA256_Init(&hmac->outer);
	SHA256_Update(&hmac->outer, pad, HMAC_BLOCK_SIZE);

	explicit_bzero(block, sizeof(block));
	explicit_bzero(pad, sizeof(pad));
}

/* Find the prepared HMAC for group_key, preparing it if it is new. */
static KeyedHmac *
keyed_hmac_for(FunctionCallInfo fcinfo, text *group_key)
{
	KeyCache   *cache = (KeyCache *) fcinfo->flinfo->fn_extra;
	KeyedHmac  *victim;
	KeyedHmac	fresh;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(KeyCache));
		fcinfo->flinfo->fn_extra = cache;
	}

	for (int i = 0; i < CACHED_GROUP_KEYS; i++)
	{
		text	   *cached = cache->entries[i].group_key;

		if (cached != NULL &&
			VARSIZE_ANY_EXHDR(cached) == VARSIZE_ANY_EXHDR(group_key) &&
			memcmp(VARDATA_ANY(cached), VARDATA_ANY(group_key),
				   VARSIZE_ANY_EXHDR(group_key)) == 0)
			return &cache->entries[i];
	}

	/* prepare the new entry completely before replacing the old one */
	fresh.group_key = (text *) MemoryContextAlloc(fcinfo->flinfo->fn_mcxt,
												  VARSIZE_ANY(group_key));
	memcpy(fresh.group_key, group_key, VARSIZE_ANY(group_key));
	keyed_hmac_init(&fresh, group_key);

	victim = &cache->entries[cache->next_victim];
	cache->next_victim = (cache->next_victim + 1) % CACHED_GROUP_KEYS;
	if (victim->group_key)
		pfree(victim->group_key);
	*victim = fresh;
	return victim;
}

/*
 * fleet.compute_device_key(group_key text, device_id text) returns text
 */
Datum
compute_device_key(PG_FUNCTION_ARGS)
{
	text	   *group_key = PG_GETARG_TEXT_PP(0);
	text	   *device_id = PG_GETARG_TEXT_PP(1);
	KeyedHmac  *hmac = keyed_hmac_for(fcinfo, group_key);
	SHA256_CTX	ctx;
	unsigned char digest[SHA256_DIGEST_LENGTH];
	text	   *result;
	int			len;

	memcpy(&ctx, &hmac->inner, sizeof(ctx));
	SHA256_Update(&ctx, VARDATA_ANY(device_id), VARSIZE_ANY_EXHDR(device_id));
	SHA256_Final(digest, &ctx);

	memcpy(&ctx, &hmac->outer, sizeof(ctx));
	SHA256_Update(&ctx, digest, sizeof(digest));
	SHA256_Final(digest, &ctx);

	result = (text *) palloc(VARHDRSZ + DEVICE_KEY_CHARS + 1);
	len = pg_b64_encode((const char *) digest, sizeof(digest),
						VARDATA(result), DEVICE_KEY_CHARS + 1);
	Assert(len == DEVICE_KEY_CHARS);
	SET_VARSIZE(result, VARHDRSZ + len);
	PG_RETURN_TEXT_P(result);
}

/*
 * fleet_internal.generate_group_key() returns text
 *
 * A new random enrollment group key: 64 bytes from the server's strong random
 * source, base64-encoded, as IoT Central makes them.
 */
Datum
generate_group_key(PG_FUNCTION_ARGS)
{
	unsigned char raw[GROUP_KEY_BYTES];
	char		b64[GROUP_KEY_BYTES * 2];
	int			len;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random group key")));

	len = pg_b64_encode((const char *) raw, sizeof(raw), b64, sizeof(b64));
	explicit_bzero(raw, sizeof(raw));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(b64, len));
}
