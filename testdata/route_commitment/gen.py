#!/usr/bin/env python3
"""Writes vector.json: the route commitment of the reference's initial train
config (../vectors/config/initial_train_config.json) signed with the vector
builder key, computed from README.md's description with the `cryptography`
package only (none of phtoci's code). Run from this directory."""
import base64, hashlib, json, struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

TAG = b"phtoci route commitment v1\x00"

cfg = json.load(open("../vectors/config/initial_train_config.json"))
builder = serialization.load_pem_private_key(open("../vectors/keys/builder.pem", "rb").read(), None)

route = sorted(cfg["route"], key=lambda e: e["index"])
msg = TAG + bytes.fromhex(cfg["hash"]) + struct.pack(">I", len(route))
listing = []
for e in route:
    key = serialization.load_pem_public_key(bytes.fromhex(e["rsa_public_key"]))
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    sid = str(e["station"]).encode()
    msg += struct.pack(">q", e["index"]) + struct.pack(">I", len(sid)) + sid + struct.pack(">I", len(der)) + der
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    listing.append({"index": e["index"], "station": str(e["station"]), "key": fp})

sig = builder.sign(msg, padding.PKCS1v15(), hashes.SHA512())
context = dict(cfg["@context"] or {})
context["phtoci_route_commitment"] = {"version": 1, "route": listing, "signature": sig.hex()}

json.dump({
    "description": "route commitment of ../vectors/config/initial_train_config.json by ../vectors/keys/builder.pem (README.md)",
    "config_file": "../vectors/config/initial_train_config.json",
    "builder_private_pem_file": "../vectors/keys/builder.pem",
    "message_hex": msg.hex(),
    "signature_hex": sig.hex(),
    "context": context,
}, open("vector.json", "w"), indent=2)
open("vector.json", "a").write("\n")
