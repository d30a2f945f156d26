#!/bin/sh
# Regenerates Protocol/vectors/{valid,invalid}/ from the definitions in
# Tests/LodeCoreTests/ProtocolVectorTests.swift. Commit the results.
set -eu
cd "$(dirname "$0")/.."
rm -f Protocol/vectors/valid/* Protocol/vectors/invalid/* Protocol/vectors/frames/valid/* Protocol/vectors/frames/invalid/*
LODE_WRITE_VECTORS=1 swift test --filter "ProtocolVectorTests/writeVectorsWhenAsked|FrameTests/writeFrameVectorsWhenAsked"
swift test --filter "ProtocolVectorTests|FrameTests"
