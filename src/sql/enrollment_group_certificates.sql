-- The signing certificates of X.509 enrollment groups, as IoT Central's
-- REST API keeps them (GET, PUT and DELETE
-- /enrollmentGroups/{id}/certificates/{entry}, with entry primary or
-- secondary), and their proof of possession (POST
-- .../generateVerificationCode, then .../verify with a certificate whose
-- common name is the code, signed by the group's certificate's key).
--
-- Certificates are read when they are given (src/x509_certificates.c): a
-- string that is not one is refused then, with what to send instead.

-- C, reading the certificate with OpenSSL; "what" names it in the error
-- for a string that is not one.
CREATE FUNCTION fleet_internal.x509_certificate_info(certificate text, what text,
                                                     OUT sha1_thumbprint text, OUT sha256_thumbprint text,
                                                     OUT subject_common_name text,
                                                     OUT not_before timestamptz, OUT not_after timestamptz)
RETURNS record
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'x509_certificate_info';
COMMENT ON FUNCTION fleet_internal.x509_certificate_info(text, text) IS 'The thumbprints (SHA-1, SHA-256), subject common name and validity of a certificate given as PEM, base64 PEM or base64 DER; an error names "what" when it is not one';

CREATE FUNCTION fleet_internal.x509_certificate_signed_by(certificate text, signer text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'x509_certificate_signed_by';
COMMENT ON FUNCTION fleet_internal.x509_certificate_signed_by(text, text) IS 'Whether the signer certificate''s key signed the certificate';

-- One signing certificate as the REST API shows it.
CREATE FUNCTION fleet_internal.signing_certificate_document(c fleet.enrollment_group_certificates)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('certificate', c.certificate, 'verified', c.verified,
                              'info', jsonb_build_object('sha1Thumbprint', c.sha1_thumbprint),
                              'etag', fleet_internal.etag(jsonb_build_array(c.sha1_thumbprint, c.verified)))
$$;

-- A group's attestation as the REST API shows it: its keys, or its
-- signing certificates.
CREATE FUNCTION fleet_internal.enrollment_group_attestation(g fleet.enrollment_groups)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE g.attestation
           WHEN 'symmetricKey'
           THEN jsonb_build_object('type', 'symmetricKey',
                                   'symmetricKey', jsonb_build_object('primaryKey', g.primary_key,
                                                                      'secondaryKey', g.secondary_key))
           ELSE jsonb_build_object('type', 'x509',
                                   'x509', jsonb_build_object('signingCertificates',
                                       (SELECT coalesce(jsonb_object_agg(c.entry, fleet_internal.signing_certificate_document(c)), '{}')
                                          FROM fleet.enrollment_group_certificates c WHERE c.enrollment_group_id = g.id)))
           END
$$;

-- "primary" or "secondary", or an error.
CREATE FUNCTION fleet_internal.require_certificate_entry(entry text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF entry IS NULL OR entry NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'unknown certificate entry "%"', entry
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An enrollment group has a ''primary'' and a ''secondary'' certificate.';
    END IF;
    RETURN entry;
END;
$$;

-- One of a group's certificates, or "does not exist" saying how to set it.
CREATE FUNCTION fleet_internal.require_certificate(enrollment_group_id text, entry text)
RETURNS fleet.enrollment_group_certificates
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c fleet.enrollment_group_certificates;
BEGIN
    SELECT x.* INTO c FROM fleet.enrollment_group_certificates x
     WHERE x.enrollment_group_id = require_certificate.enrollment_group_id
       AND x.entry = fleet_internal.require_certificate_entry(require_certificate.entry);
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('certificate', format('%s/%s', enrollment_group_id, entry),
                                              'Set it with fleet.set_enrollment_group_certificate() first.');
    END IF;
    RETURN c;
END;
$$;

-- The group, which must be an X.509 group, locked for a change of its
-- certificates by an administrator of its organization.
CREATE FUNCTION fleet_internal.require_x509_group(enrollment_group_id text, action text)
RETURNS fleet.enrollment_groups
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(), action);
BEGIN
    IF g.attestation <> 'x509' THEN
        RAISE EXCEPTION 'enrollment group "%" has no certificates', g.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its attestation is symmetric keys.',
                  HINT = 'Make an X.509 group with fleet.import_enrollment_group(), attestation {"type": "x509", ...}.';
    END IF;
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR UPDATE;
    RETURN g;
END;
$$;

-- Stores one signing certificate from the REST body {"certificate",
-- "verified"} ("info" and "etag" are what GET showed, and are read-only).
-- A new certificate is unverified unless the body says it is verified, as
-- IoT Central's "set as verified on upload" does.
CREATE FUNCTION fleet_internal.set_signing_certificate(enrollment_group_id text, entry text, body jsonb, label text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    what text := format('the %s certificate of %s', entry, label);
    info record;
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Write {"certificate": "<the certificate>"}.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(body, '{certificate,verified,info,etag}', what);
    IF jsonb_typeof(body -> 'certificate') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "certificate"', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the certificate as its PEM file''s text, or that text or its DER bytes in base64.';
    END IF;
    IF body ? 'verified' AND jsonb_typeof(body -> 'verified') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"verified" of % must be true or false', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    info := fleet_internal.x509_certificate_info(body ->> 'certificate', what);
    INSERT INTO fleet.enrollment_group_certificates AS c (enrollment_group_id, entry, certificate, sha1_thumbprint, verified)
    VALUES (enrollment_group_id, entry, body ->> 'certificate', info.sha1_thumbprint, coalesce((body ->> 'verified')::boolean, false))
    ON CONFLICT ON CONSTRAINT enrollment_group_certificates_pkey DO UPDATE
       SET certificate = EXCLUDED.certificate, sha1_thumbprint = EXCLUDED.sha1_thumbprint,
           -- the same certificate stays verified unless the body says otherwise
           verified = CASE WHEN body ? 'verified' THEN EXCLUDED.verified
                           WHEN c.sha1_thumbprint = EXCLUDED.sha1_thumbprint THEN c.verified
                           ELSE false END,
           verification_code = CASE WHEN c.sha1_thumbprint = EXCLUDED.sha1_thumbprint THEN c.verification_code END;
END;
$$;

-- The certificates of an attestation's "x509": {"signingCertificates":
-- {"primary": {...}, "secondary": {...}}}; an entry given as null is
-- removed.
CREATE FUNCTION fleet_internal.set_signing_certificates(enrollment_group_id text, x509 jsonb, label text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry text;
BEGIN
    IF x509 IS NULL OR jsonb_typeof(x509) = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(x509) <> 'object' OR jsonb_typeof(coalesce(x509 -> 'signingCertificates', '{}')) <> 'object' THEN
        RAISE EXCEPTION 'the x509 attestation of % must be {"signingCertificates": {"primary": ..., "secondary": ...}}', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(x509, '{signingCertificates}', format('the x509 attestation of %s', label));
    PERFORM fleet_internal.refuse_unknown_keys(x509 -> 'signingCertificates', '{primary,secondary}',
                                              format('the signing certificates of %s', label));
    FOR entry IN SELECT k FROM jsonb_object_keys(coalesce(x509 -> 'signingCertificates', '{}')) k ORDER BY k LOOP
        IF jsonb_typeof(x509 -> 'signingCertificates' -> entry) = 'null' THEN
            DELETE FROM fleet.enrollment_group_certificates c
             WHERE c.enrollment_group_id = set_signing_certificates.enrollment_group_id AND c.entry = set_signing_certificates.entry;
        ELSE
            PERFORM fleet_internal.set_signing_certificate(enrollment_group_id, entry, x509 -> 'signingCertificates' -> entry, label);
        END IF;
    END LOOP;
END;
$$;

-- GET /enrollmentGroups/{id}/certificates/{entry}
CREATE FUNCTION fleet.get_enrollment_group_certificate(enrollment_group_id text, entry text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                         'reading an enrollment group');
BEGIN
    RETURN fleet_internal.signing_certificate_document(fleet_internal.require_certificate(g.id, entry));
END;
$$;
COMMENT ON FUNCTION fleet.get_enrollment_group_certificate(text, text) IS 'The primary or secondary signing certificate of an X.509 enrollment group: certificate, verified, info.sha1Thumbprint, etag';

-- PUT /enrollmentGroups/{id}/certificates/{entry}: {"certificate",
-- "verified"}, If-Match on the entry's "etag".
CREATE FUNCTION fleet.set_enrollment_group_certificate(enrollment_group_id text, entry text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g     fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'changing an enrollment group');
    label text := format('enrollment group "%s"', enrollment_group_id);
    c     fleet.enrollment_group_certificates;
BEGIN
    entry := fleet_internal.require_certificate_entry(entry);
    SELECT x.* INTO c FROM fleet.enrollment_group_certificates x WHERE x.enrollment_group_id = g.id AND x.entry = set_enrollment_group_certificate.entry;
    IF jsonb_typeof(body) = 'object' AND c.enrollment_group_id IS NOT NULL THEN
        PERFORM fleet_internal.require_etag(format('the %s certificate of %s', entry, label), body -> 'etag',
                                           fleet_internal.signing_certificate_document(c) ->> 'etag');
    END IF;
    PERFORM fleet_internal.set_signing_certificate(g.id, entry, body, label);
    RETURN fleet.get_enrollment_group_certificate(g.id, entry);
END;
$$;
COMMENT ON FUNCTION fleet.set_enrollment_group_certificate(text, text, jsonb) IS 'Sets the primary or secondary signing certificate of an X.509 enrollment group from IoT Central''s body ({"certificate", "verified"}); returns it';

-- DELETE /enrollmentGroups/{id}/certificates/{entry}
CREATE FUNCTION fleet.delete_enrollment_group_certificate(enrollment_group_id text, entry text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'changing an enrollment group');
BEGIN
    DELETE FROM fleet.enrollment_group_certificates c
     WHERE c.enrollment_group_id = g.id AND c.entry = fleet_internal.require_certificate_entry(delete_enrollment_group_certificate.entry);
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('certificate', format('%s/%s', g.id, entry));
    END IF;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_group_certificate(text, text) IS 'Removes the primary or secondary signing certificate of an X.509 enrollment group';

-- POST .../certificates/{entry}/generateVerificationCode: a new random
-- code, which the next .../verify must carry as its common name.
CREATE FUNCTION fleet.generate_enrollment_group_verification_code(enrollment_group_id text, entry text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g    fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'verifying an enrollment group certificate');
    c    fleet.enrollment_group_certificates := fleet_internal.require_certificate(g.id, entry);
    code text := upper(replace(gen_random_uuid()::text, '-', ''));
BEGIN
    UPDATE fleet.enrollment_group_certificates x SET verification_code = code
     WHERE x.enrollment_group_id = c.enrollment_group_id AND x.entry = c.entry;
    RETURN jsonb_build_object('verificationCode', code);
END;
$$;
COMMENT ON FUNCTION fleet.generate_enrollment_group_verification_code(text, text) IS 'A new verification code for a signing certificate''s proof of possession ({"verificationCode"})';

-- POST .../certificates/{entry}/verify {"certificate"}: the certificate
-- must name the code as its subject's common name and be signed by the
-- group's certificate's key.  Then the group's certificate is verified.
CREATE FUNCTION fleet.verify_enrollment_group_certificate(enrollment_group_id text, entry text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g    fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'verifying an enrollment group certificate');
    what text := format('the verification certificate of %s/%s', enrollment_group_id, entry);
    c    fleet.enrollment_group_certificates := fleet_internal.require_certificate(g.id, entry);
    info record;
BEGIN
    IF c.verification_code IS NULL THEN
        RAISE EXCEPTION 'no verification code was generated for certificate "%/%"', g.id, entry
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Get one with fleet.generate_enrollment_group_verification_code(%L, %L).', g.id, entry);
    END IF;
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' OR jsonb_typeof(body -> 'certificate') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% must be given as {"certificate": ...}', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(body, '{certificate}', what);
    info := fleet_internal.x509_certificate_info(body ->> 'certificate', what);
    IF info.subject_common_name IS DISTINCT FROM c.verification_code THEN
        RAISE EXCEPTION '% does not carry the verification code', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its subject''s common name is %s.', coalesce('"' || info.subject_common_name || '"', 'missing')),
                  HINT = 'Make a certificate whose common name is the code fleet.generate_enrollment_group_verification_code() gave last, signed with the group certificate''s private key.';
    END IF;
    IF NOT fleet_internal.x509_certificate_signed_by(body ->> 'certificate', c.certificate) THEN
        RAISE EXCEPTION '% is not signed by the group''s certificate', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Sign it with the private key of the certificate set on the group.';
    END IF;
    UPDATE fleet.enrollment_group_certificates x SET verified = true, verification_code = NULL
     WHERE x.enrollment_group_id = c.enrollment_group_id AND x.entry = c.entry;
    RETURN fleet.get_enrollment_group_certificate(g.id, entry);
END;
$$;
COMMENT ON FUNCTION fleet.verify_enrollment_group_certificate(text, text, jsonb) IS 'Verifies a signing certificate: the body''s certificate carries the last verification code as its common name and is signed by the group certificate''s key';
