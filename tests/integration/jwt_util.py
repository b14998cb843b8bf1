"""Mint JSON Web Tokens for the auth tests: standard library only (base64url + hmac).

Good tokens are HS256 with `sub` and an integer `exp`; the other helpers build every kind of
bad token the gateway must refuse (alg none, HS512, tampered payload or signature, expired,
no exp, exp as a string, no sub, channels that is not an array, garbage)."""

import base64
import hashlib
import hmac
import json
import time

SECRET = "it-secret-0123456789abcdef0123456789abcdef"


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj):
    return json.dumps(obj, separators=(",", ":"))


def sign(header, claims, secret=SECRET, digest=hashlib.sha256):
    """Compact JWS of `claims` (dict, or str taken as the exact payload JSON) under `header`,
    signed with HMAC-`digest` (None: empty signature, as alg none)."""
    payload = claims if isinstance(claims, str) else _json(claims)
    signing_input = f"{b64url(_json(header))}.{b64url(payload)}"
    if digest is None:
        return signing_input + "."
    if isinstance(secret, str):
        secret = secret.encode()
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


def claims(sub="user-1", channels=None, publish=None, exp_in=300, **extra):
    """A claims dict: exp = now + exp_in seconds; channels/publish only when given."""
    c = {"sub": sub, "exp": int(time.time()) + exp_in}
    if channels is not None:
        c["channels"] = channels
    if publish is not None:
        c["publish"] = publish
    c.update(extra)
    return c


def token(secret=SECRET, **kw):
    """A valid HS256 token; keyword arguments go to claims()."""
    return sign({"alg": "HS256", "typ": "JWT"}, claims(**kw), secret)


# --- bad tokens -------------------------------------------------------------------------------


def wrong_secret(**kw):
    return token(secret="not-the-" + SECRET, **kw)


def alg_none(**kw):
    return sign({"alg": "none", "typ": "JWT"}, claims(**kw), digest=None)


def alg_none_signed(**kw):
    """alg none in the header but a (valid HS256) signature present anyway."""
    return sign({"alg": "none", "typ": "JWT"}, claims(**kw))


def hs512(**kw):
    return sign({"alg": "HS512", "typ": "JWT"}, claims(**kw), digest=hashlib.sha512)


def hs512_labelled_hs256(**kw):
    """Header says HS256 but the MAC is HMAC-SHA512."""
    return sign({"alg": "HS256", "typ": "JWT"}, claims(**kw), digest=hashlib.sha512)


def tampered_payload(**kw):
    """A valid token whose payload was replaced (wider channels) after signing."""
    good = token(**kw)
    h, _, s = good.split(".")
    wider = claims(**kw)
    wider["channels"] = ["*"]
    wider["publish"] = ["*"]
    return f"{h}.{b64url(_json(wider))}.{s}"


def tampered_signature(**kw):
    good = token(**kw)
    h, p, s = good.split(".")
    raw = bytearray(b64url_decode(s))
    raw[0] ^= 0x01
    return f"{h}.{p}.{b64url(bytes(raw))}"


def truncated_signature(**kw):
    h, p, s = token(**kw).split(".")
    return f"{h}.{p}.{s[:-4]}"


def expired(ago=3600, **kw):
    kw["exp_in"] = -ago
    return token(**kw)


def _with_claims(mutate, **kw):
    c = claims(**kw)
    mutate(c)
    return sign({"alg": "HS256", "typ": "JWT"}, c)


def missing_exp(**kw):
    return _with_claims(lambda c: c.pop("exp"), **kw)


def string_exp(**kw):
    return _with_claims(lambda c: c.update(exp=str(c["exp"])), **kw)


def missing_sub(**kw):
    return _with_claims(lambda c: c.pop("sub"), **kw)


def non_array_channels(**kw):
    return _with_claims(lambda c: c.update(channels="bot:status:*"), **kw)


def non_array_publish(**kw):
    return _with_claims(lambda c: c.update(publish="bot:status:*"), **kw)


def non_string_channel_item(**kw):
    return _with_claims(lambda c: c.update(channels=["ok", 7]), **kw)


def payload_not_object(**kw):
    return sign({"alg": "HS256", "typ": "JWT"}, "[1,2,3]")


def payload_not_json(**kw):
    return sign({"alg": "HS256", "typ": "JWT"}, "{not json")


def garbage():
    return "this.is.not-a-jwt"


def bad_tokens():
    """(name, token) for every token the gateway must refuse (all signed with SECRET where a
    signature is involved, unless the point is a wrong key)."""
    ch = ["bot:status:*"]
    return [
        ("garbage", garbage()),
        ("two-parts", "abc.def"),
        ("empty-parts", ".."),
        ("wrong-secret", wrong_secret(channels=ch)),
        ("tampered-signature", tampered_signature(channels=ch)),
        ("truncated-signature", truncated_signature(channels=ch)),
        ("tampered-payload", tampered_payload(channels=ch)),
        ("alg-none", alg_none(channels=ch)),
        ("alg-none-with-signature", alg_none_signed(channels=ch)),
        ("hs512", hs512(channels=ch)),
        ("hs512-labelled-hs256", hs512_labelled_hs256(channels=ch)),
        ("expired", expired(channels=ch)),
        ("missing-exp", missing_exp(channels=ch)),
        ("string-exp", string_exp(channels=ch)),
        ("missing-sub", missing_sub(channels=ch)),
        ("non-array-channels", non_array_channels()),
        ("non-array-publish", non_array_publish(channels=ch)),
        ("non-string-channel-item", non_string_channel_item()),
        ("payload-not-object", payload_not_object()),
        ("payload-not-json", payload_not_json()),
    ]


# --- asymmetric tokens (RS256, ES256), signed with the openssl command line -----------------


def openssl(*argv, data=None):
    import subprocess
    return subprocess.run(["openssl", *argv], input=data, check=True,
                          capture_output=True).stdout


def new_key(path, kind):
    """A private key file: kind "rsa" (2048 bits), "rsa1024" or "ec" (P-256)."""
    opts = {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "rsa1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]}[kind]
    openssl("genpkey", *opts, "-out", path)
    return path


def public_pem(key_path):
    return openssl("pkey", "-in", key_path, "-pubout").decode()


def _der_to_raw(der):
    """ECDSA-Sig-Value (DER) -> R||S, 32 bytes each, as JWS carries ES256."""
    i, out = 2, b""
    for _ in range(2):
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        i += 2 + n
    return out


def sign_with_key(key_path, header, claims_obj):
    """A compact JWS signed with a private key file: RS256 for RSA, ES256 for EC keys (the
    header is used as given, so tests can lie in it)."""
    import tempfile
    inp = f"{b64url(_json(header))}.{b64url(claims_obj if isinstance(claims_obj, str) else _json(claims_obj))}"
    with tempfile.NamedTemporaryFile() as f:
        f.write(inp.encode())
        f.flush()
        sig = openssl("dgst", "-sha256", "-sign", key_path, f.name)
    ec = b"Modulus" not in openssl("pkey", "-in", key_path, "-noout", "-text_pub")
    return f"{inp}.{b64url(_der_to_raw(sig) if ec else sig)}"


def jwk(key_path, kid, **extra):
    """The public JWK of a private key file (RSA or EC P-256)."""
    text = openssl("pkey", "-in", key_path, "-noout", "-text").decode()
    if "modulus:" in text:
        mod = text.split("modulus:")[1].split("publicExponent")[0]
        n = bytes.fromhex("".join(mod.split()).replace(":", "")).lstrip(b"\0")
        out = {"kty": "RSA", "kid": kid, "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))}
    else:
        pub = text.split("pub:")[1].split("ASN1 OID")[0]
        point = bytes.fromhex("".join(pub.split()).replace(":", ""))
        out = {"kty": "EC", "kid": kid, "crv": "P-256", "x": b64url(point[1:33]),
               "y": b64url(point[33:])}
    out.update(extra)
    return out
