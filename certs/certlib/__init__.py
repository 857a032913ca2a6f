"""The code behind certs/make_certs.py (the command line), one concern per module:

  messages.py      CertError and say(): what the operator reads, plain or JSON Lines
  names.py         the names in certificates (--san), node folder names
  certificates.py  keys, PEM and a certificate's common fields and signing
  owners.py        whose key files are: the containers' uids, --owner/--node-owner
  denied.py        a file it may not use: one line naming whose it is and the fix
  store.py         the output folder: files written with their final mode and owner, never
                   overwritten unless --force; certificates and keys read back
  ca.py, server.py, nodes.py, publisher.py, ray_nodes.py
                   each product: the CA; the SuperLink's certificate and the SuperExec
                   secret; SuperNode keys and revocation; the app publisher's key; Ray's
  report.py        `show` and the closing instructions

make_certs.py imports every module when it loads (tests/test_certs.py runs it as another
uid after loading it as root), so nothing here may import lazily from this package. The
Dockerfile copies this folder beside make_certs.py, and .dockerignore lists each file.
"""
