#!/bin/sh
# Regenerates the TEST-ONLY keys in this folder with openssl (3.x). They sign
# client assertions in tokenkeeper's tests; they protect nothing and must
# never be used anywhere else.
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out test-es256.pem
openssl pkey -in test-es256.pem -pubout -out test-es256.pub.pem
openssl ec -in test-es256.pem -out test-es256-sec1.pem 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out test-rsa2048.pem
openssl pkey -in test-rsa2048.pem -pubout -out test-rsa2048.pub.pem
openssl rsa -in test-rsa2048.pem -traditional -out test-rsa2048-pkcs1.pem 2>/dev/null
openssl genpkey -algorithm ED25519 -out test-ed25519.pem
openssl pkey -in test-ed25519.pem -pubout -out test-ed25519.pub.pem
# Keys that must be refused.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out test-rsa1024.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out test-p384.pem
openssl pkey -in test-es256.pem -aes256 -passout pass:test -out test-es256-encrypted.pem
openssl rsa -in test-rsa2048.pem -traditional -aes256 -passout pass:test -out test-rsa2048-encrypted-pkcs1.pem 2>/dev/null
