// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Lodestone",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lode", targets: ["lode"]),
        .library(name: "LodeCore", targets: ["LodeCore"]),
        .library(name: "LodeStore", targets: ["LodeStore"]),
        .library(name: "LodeSQLite", targets: ["LodeSQLite"]),
        .library(name: "LodePostgres", targets: ["LodePostgres"]),
        .library(name: "LodeNode", targets: ["LodeNode"]),
        .library(name: "LodeProtocol", targets: ["LodeProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .target(
            name: "LodeCore",
            dependencies: ["CZlib", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .systemLibrary(
            name: "CLodeSQLite",
            path: "Sources/CLodeSQLite",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(name: "LodeStore", dependencies: ["LodeCore"]),
        .target(
            name: "LodeSQLite",
            dependencies: [
                "LodeCore", "LodeStore", "CLodeSQLite", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "LodePostgres",
            dependencies: [
                "LodeCore", "LodeStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "LodeProtocol",
            dependencies: ["LodeCore"]
        ),
        .target(
            name: "LodeSync",
            dependencies: [
                "LodeCore", "LodeProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(name: "LodeWeb", dependencies: ["LodeCore"]),
        .target(
            name: "LodeNode",
            dependencies: [
                "LodeWeb",
                "LodeCore", "LodeStore", "LodeSQLite", "LodePostgres", "LodeProtocol", "LodeSync",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "lode",
            dependencies: [
                "LodeNode", "LodeProtocol", "LodeCore", "LodeStore", "LodeSync",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "lode-bench",
            dependencies: [
                "LodeNode", "LodeStore", "LodeSQLite", "LodeSync", "LodeCore", "CLodeSQLite", "LodeProtocol",
                // W11 starts its own PostgreSQL server, as the tests do.
                "LodeTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Benchmarks/LodeBench"
        ),
        .executableTarget(
            name: "lode-faults",
            // LodeTestSupport: `failover` starts its own PostgreSQL server, as the tests do.
            dependencies: ["LodeCore", "LodeProtocol", "LodeTestSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tools/LodeFaults"
        ),
        .testTarget(name: "LodeCoreTests", dependencies: ["LodeCore", .product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "LodeTestSupport",
            dependencies: [
                "LodeCore", "LodeStore", "LodeSQLite", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Tests/LodeTestSupport"
        ),
        .testTarget(
            name: "LodeStoreTests",
            dependencies: [
                "LodeStore", "LodeSQLite", "LodePostgres", "LodeCore", "LodeTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        .testTarget(
            name: "LodeSQLiteTests",
            dependencies: [
                "LodeSQLite", "LodeStore", "LodeCore", "LodeTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "LodeSyncTests",
            dependencies: [
                "LodeSync", "LodeProtocol", "LodeCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "LodeNodeTests",
            dependencies: [
                "LodeNode", "LodeStore", "LodeSQLite", "LodeCore", "LodeProtocol", "LodeSync", "LodeTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The CLI tests run the built `lode` binary; depending on it builds it first.
        .testTarget(name: "LodeCLITests", dependencies: ["lode", "LodeTestSupport"]),
        .testTarget(name: "LodeFaultsTests", dependencies: ["lode-faults"]),
    ]
)

// The libFuzzer targets, only when Fuzz/run.sh asks for them: they have no
// main of their own (libFuzzer's, linked by -sanitize=fuzzer, runs them).
if Context.environment["LODE_FUZZ"] != nil {
    package.products.append(.executable(name: "lode-fuzz", targets: ["lode-fuzz"]))
    package.targets.append(
        .executableTarget(
            name: "lode-fuzz",
            dependencies: [
                "LodeCore", "LodeStore", "LodeSQLite", "LodeProtocol", "LodeSync", "LodeNode", .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Fuzz/LodeFuzz",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ))
}
