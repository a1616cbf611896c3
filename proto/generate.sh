#!/bin/sh
# Regenerates Sources/ChasquidProto/*.pb.swift from proto/*.proto.
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-swift built from
# the same swift-protobuf version as Package.swift names:
#   swift build -c release --product protoc-gen-swift   (in a swift-protobuf checkout)
# and PROTOC_GEN_SWIFT pointing at it. CI does not run this; the output is committed.
set -eu
cd "$(dirname "$0")"
: "${PROTOC_GEN_SWIFT:=$(command -v protoc-gen-swift)}"
protoc --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" \
  --swift_opt=Visibility=Public \
  --swift_out=../Sources/ChasquidProto \
  config.proto userdb.proto domaininfo.proto queue.proto
