#!/bin/sh
# Regenerates Protocol/vectors/{valid,invalid}/ from the definitions in
# Tests/LodeCoreTests/ProtocolVectorTests.swift. Commit the results.
set -eu
cd "$(dirname "$0")/.."
rm -f Protocol/vectors/valid/* Protocol/vectors/invalid/*
LODE_WRITE_VECTORS=1 swift test --filter ProtocolVectorTests/writeVectorsWhenAsked
swift test --filter ProtocolVectorTests
