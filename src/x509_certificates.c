/*-------------------------------------------------------------------------
 *
 * x509_certificates.c
 *	  Reading the X.509 signing certificates of enrollment groups, and the
 *	  proof of possession IoT Central asks for before it trusts one.
 *
 * IoT Central's REST API takes a certificate as a string: the PEM file's
 * text, or its base64 (what "az iot central enrollment-group" sends), or
 * the DER bytes in base64.  All three are read here with OpenSSL, so that
 * a string that is not a certificate is refused when it is given, not when
 * a device presents a certificate signed by it.
 *
 * Proof of possession is the Device Provisioning Service's: the group gets
 * a random verification code, and its owner signs, with the certificate's
 * private key, a certificate whose subject common name is that code.  Only
 * the holder of the key can make one that verifies.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "access/htup_details.h"
#include "common/base64.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(x509_certificate_info);
PG_FUNCTION_INFO_V1(x509_certificate_signed_by);

#define PEM_MARKER "-----BEGIN"

/* base64 without the whitespace a pasted or wrapped string carries */
static char *
decode_base64(const char *given, int given_len, int *decoded_len)
{
	char	   *compact = palloc(given_len + 1);
	int			compact_len = 0;
	char	   *decoded;

	for (int i = 0; i < given_len; i++)
		if (!isspace((unsigned char) given[i]))
			compact[compact_len++] = given[i];
	decoded = palloc(pg_b64_dec_len(compact_len) + 1);
	*decoded_len = pg_b64_decode(compact, compact_len, decoded, pg_b64_dec_len(compact_len));
	pfree(compact);
	return decoded;
}

/* A PEM or DER certificate in memory, or NULL. */
static X509 *
parse_bytes(const char *bytes, int len)
{
	X509	   *cert = NULL;

	if (len >= (int) strlen(PEM_MARKER) && memmem(bytes, len, PEM_MARKER, strlen(PEM_MARKER)) != NULL)
	{
		BIO		   *bio = BIO_new_mem_buf(bytes, len);

		if (bio != NULL)
		{
			cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
			BIO_free(bio);
		}
	}
	else if (len > 0)
	{
		const unsigned char *p = (const unsigned char *) bytes;

		cert = d2i_X509(NULL, &p, len);
		/* DER with bytes after the certificate is not one certificate */
		if (cert != NULL && p != (const unsigned char *) bytes + len)
		{
			X509_free(cert);
			cert = NULL;
		}
	}
	return cert;
}

/* Whether the bytes hold a private key, of any kind PEM writes. */
static bool
holds_private_key(const char *bytes, int len)
{
	return memmem(bytes, len, "PRIVATE KEY", strlen("PRIVATE KEY")) != NULL;
}

/*
 * The certificate a string holds: PEM text, base64 of PEM text, or base64
 * of DER; NULL when it holds none.  *private_key says whether it also
 * holds a private key (a bundle pasted whole), which is never kept.  The
 * caller frees the certificate with X509_free().  Nothing here raises an
 * error, so that the caller frees what it holds before it does.
 */
static X509 *
parse_certificate(text *given, bool *private_key)
{
	const char *data = VARDATA_ANY(given);
	int			len = VARSIZE_ANY_EXHDR(given);
	X509	   *cert = parse_bytes(data, len);

	*private_key = holds_private_key(data, len);
	if (cert == NULL && memmem(data, len, PEM_MARKER, strlen(PEM_MARKER)) == NULL)
	{
		int			decoded_len;
		char	   *decoded = decode_base64(data, len, &decoded_len);

		if (decoded_len > 0)
		{
			cert = parse_bytes(decoded, decoded_len);
			*private_key = *private_key || holds_private_key(decoded, decoded_len);
		}
		pfree(decoded);
	}

	/*
	 * A failed parse leaves errors in OpenSSL's queue, which the server's own
	 * SSL code reads after its calls: leave it empty.
	 */
	ERR_clear_error();
	return cert;
}

/* Refuses what parse_certificate() could not take, naming it "what". */
static void
refuse_certificate(const char *what, bool private_key)
{
	if (private_key)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s holds a private key", what),
				 errdetail("A private key is never stored, and never sent anywhere."),
				 errhint("Give the certificate alone: the -----BEGIN CERTIFICATE----- block of the file.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s is not an X.509 certificate", what),
			 errhint("Give the certificate as its PEM file's text (-----BEGIN CERTIFICATE----- ...), or that text or its DER bytes in base64.")));
}

/* The digest in upper-case hex, as IoT Central shows thumbprints; NULL on failure. */
static char *
hex_digest(X509 *cert, const EVP_MD *md)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len;
	char	   *hex;

	if (!X509_digest(cert, md, digest, &digest_len))
		return NULL;
	hex = palloc(digest_len * 2 + 1);
	for (unsigned int i = 0; i < digest_len; i++)
		sprintf(hex + i * 2, "%02X", digest[i]);
	return hex;
}

/* The common name of the certificate's subject (UTF-8), or NULL. */
static char *
subject_common_name(X509 *cert)
{
	X509_NAME  *subject = X509_get_subject_name(cert);
	int			index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	ASN1_STRING *value;
	unsigned char *utf8;
	int			utf8_len;
	char	   *result;

	if (index < 0)
		return NULL;
	value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
	utf8_len = ASN1_STRING_to_UTF8(&utf8, value);
	if (utf8_len < 0)
		return NULL;
	result = pnstrdup((char *) utf8, utf8_len);
	OPENSSL_free(utf8);
	return result;
}

/* A broken-down UTC time as a timestamptz. */
static TimestampTz
tm_timestamptz(struct tm *tm)
{
	return (TimestampTz) ((timegm(tm) - ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)) * USECS_PER_SEC);
}

/*
 * fleet_internal.x509_certificate_info(certificate text, what text)
 *	  sha1_thumbprint, sha256_thumbprint (upper-case hex, as IoT Central
 *	  shows them), subject_common_name, not_before, not_after.
 */
Datum
x509_certificate_info(PG_FUNCTION_ARGS)
{
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		private_key;
	X509	   *cert = parse_certificate(PG_GETARG_TEXT_PP(0), &private_key);
	char	   *sha1;
	char	   *sha256;
	char	   *common_name;
	struct tm	not_before;
	struct tm	not_after;
	bool		readable;
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false};

	if (cert == NULL || private_key)
	{
		if (cert != NULL)
			X509_free(cert);
		refuse_certificate(what, private_key);
	}
	/* (ASN1_TIME_to_tm takes UTCTime and GeneralizedTime alike) */
	sha1 = hex_digest(cert, EVP_sha1());
	sha256 = hex_digest(cert, EVP_sha256());
	common_name = subject_common_name(cert);
	readable = sha1 != NULL && sha256 != NULL
		&& ASN1_TIME_to_tm(X509_get0_notBefore(cert), &not_before)
		&& ASN1_TIME_to_tm(X509_get0_notAfter(cert), &not_after);
	X509_free(cert);
	ERR_clear_error();
	if (!readable)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not an X.509 certificate pg_fleet can read", what),
				 errdetail("Its digest or its validity times could not be read."),
				 errhint("Give a certificate that OpenSSL's \"openssl x509 -text\" reads.")));

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "x509_certificate_info must return a record");
	values[0] = CStringGetTextDatum(sha1);
	values[1] = CStringGetTextDatum(sha256);
	if (common_name != NULL)
		values[2] = CStringGetTextDatum(pg_any_to_server(common_name, strlen(common_name), PG_UTF8));
	else
		nulls[2] = true;
	values[3] = TimestampTzGetDatum(tm_timestamptz(&not_before));
	values[4] = TimestampTzGetDatum(tm_timestamptz(&not_after));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * fleet_internal.x509_certificate_signed_by(certificate text, signer text)
 *	  Whether the signer's key signed the certificate: the proof that whoever
 *	  made the certificate holds the signer's private key.
 */
Datum
x509_certificate_signed_by(PG_FUNCTION_ARGS)
{
	bool		cert_private_key;
	bool		signer_private_key;
	X509	   *cert = parse_certificate(PG_GETARG_TEXT_PP(0), &cert_private_key);
	X509	   *signer = parse_certificate(PG_GETARG_TEXT_PP(1), &signer_private_key);
	bool		signed_by = false;

	if (cert != NULL && signer != NULL)
	{
		EVP_PKEY   *key = X509_get0_pubkey(signer);

		signed_by = key != NULL && X509_verify(cert, key) == 1;
	}
	if (cert != NULL)
		X509_free(cert);
	if (signer != NULL)
		X509_free(signer);
	ERR_clear_error();			/* (a signature that does not verify queues one) */
	if (cert == NULL || cert_private_key)
		refuse_certificate("the verification certificate", cert_private_key);
	if (signer == NULL)
		refuse_certificate("the signing certificate", false);
	PG_RETURN_BOOL(signed_by);
}
