"""A throwaway public key infrastructure for the TLS tests (the openssl command line)."""

import os
import subprocess


def make_pki(tmp):
    """A CA, a server certificate it signs (CN and SAN localhost, SAN IP 127.0.0.1) and an
    unrelated CA. Returns a dict of file paths."""
    f = {k: os.path.join(tmp, k) for k in (
        "ca.crt", "ca.key", "server.crt", "server.key", "server.csr", "server.ext",
        "other-ca.crt", "other-ca.key")}

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=Herald test CA", "-keyout", f["ca.key"], "-out", f["ca.crt"])
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=Herald other CA", "-keyout", f["other-ca.key"],
            "-out", f["other-ca.crt"])
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f["server.key"], "-out", f["server.csr"])
    with open(f["server.ext"], "w") as ext:
        ext.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                  "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f["server.csr"], "-CA", f["ca.crt"], "-CAkey", f["ca.key"],
            "-CAcreateserial", "-days", "1", "-extfile", f["server.ext"],
            "-out", f["server.crt"])
    return f
