// swift-tools-version:6.1
import PackageDescription

// Swift code is compiled for a CPU level that every x86-64 box of the last decade has
// (AVX2 + FMA: "haswell"), so SIMD8<Float> maps onto one ymm register. Override with
// SVITE_TARGET_CPU=native (fastest, not portable) or SVITE_TARGET_CPU=generic.
// oneDNN and OpenBLAS pick their own kernels at run time either way (Kernels/Engine.swift).
import Foundation
let targetCPU: String? = {
    let requested = ProcessInfo.processInfo.environment["SVITE_TARGET_CPU"]
    if requested == "generic" { return nil }
    #if arch(x86_64)
    return requested ?? "haswell"
    #else
    return requested
    #endif
}()
let numericFlags: [SwiftSetting] = targetCPU.map { [.unsafeFlags(["-target-cpu", $0])] } ?? []

let package = Package(
    name: "svite",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "svite", targets: ["svite"]),
        .library(name: "Model", targets: ["Model"]),
        .library(name: "Kernels", targets: ["Kernels"]),
    ],
    // Exact versions: every build (the quick start, CI, the Dockerfile) gets the same code
    // without a Package.resolved, which is kept out of git (its commit ids are those of the
    // copy it was resolved from). swift-prometheus's own dependencies are named here too,
    // so they are pinned as well.
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        // The Prometheus endpoint: text format, and a small HTTP server without NIO.
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/swhitty/FlyingFox", exact: "0.27.1"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-atomics", exact: "1.3.0"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
    ],
    targets: [
        // C libraries from Debian, each a module map plus a one-line shim header.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CZeroMQ", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CLZ4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Charts with text (axes, legends) to PNG and SVG: `svite plot`.
        .systemLibrary(name: "CCairo", pkgConfig: "cairo", providers: [.apt(["libcairo2-dev"])]),
        // Image folders: JPEG through TurboJPEG (libjpeg-turbo's API that returns errors
        // instead of longjmp-ing), PNG through libpng's simplified API.
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),

        // Flat buffers, seeds, clocks, atomic files and strict config reading: what every
        // layer above shares.
        .target(name: "Core", dependencies: ["CZlib", .product(name: "Yams", package: "Yams")]),
        .target(name: "Kernels", dependencies: ["CBLAS", "CDNNL"], swiftSettings: numericFlags),
        .target(name: "Model", dependencies: ["Core", "Kernels"], swiftSettings: numericFlags),
        .target(name: "Datasets", dependencies: ["Core", "Kernels", "CZlib", "Images"], swiftSettings: numericFlags),
        .target(name: "Optim", dependencies: ["Core", "Kernels", "Model", "Config", "Sparsity", "Compression", "Steps"], swiftSettings: numericFlags),
        .target(name: "Sparsity", dependencies: ["Core", "Kernels", "Model"], swiftSettings: numericFlags),
        // What a worker's gradient becomes on the wire: value codecs, positions, top-k with
        // error feedback, the shared estimate, behind one GradientCompressor protocol.
        .target(name: "Compression", dependencies: ["Core", "Kernels", "Model", "Sparsity"], swiftSettings: numericFlags),
        // The two records of a step: the order a step gives (StepOrder) and the update it
        // made (ParameterUpdate), each with its one encoding.
        .target(name: "Steps", dependencies: ["Core", "Model", "Sparsity", "Compression"]),
        .target(name: "Pictures", dependencies: ["CZlib"]),
        // The run config: every section, the built-in configs.
        .target(name: "Config", dependencies: [
            "Core", "Kernels", "Model", "Datasets", "Sparsity", "Compression",
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: numericFlags),
        // What computes a gradient or an evaluation: the replica and the evaluator, used by
        // the trainer and by workers (which do not link the trainer).
        .target(name: "Compute", dependencies: [
            "Core", "Kernels", "Model", "Datasets", "Sparsity", "Config",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: numericFlags),
        .target(name: "Training", dependencies: [
            "Core", "Kernels", "Model", "Datasets", "Optim", "Sparsity", "Config", "Compute", "Compression", "Steps",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: numericFlags),
        .target(name: "Wire", dependencies: ["Core", "Model", "Sparsity", "Compression", "Steps", "CLZ4", "CZlib"], swiftSettings: numericFlags),
        .target(name: "Transport", dependencies: ["Core", "CZeroMQ"]),
        .target(name: "Coordinator", dependencies: [
            "Core", "Kernels", "Model", "Datasets", "Optim", "Sparsity", "Config", "Compression", "Steps", "Training", "Transport", "Wire",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: numericFlags),
        .target(name: "Worker", dependencies: [
            "Core", "Kernels", "Model", "Datasets", "Optim", "Sparsity", "Config", "Compute", "Compression", "Steps", "Transport", "Wire",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: numericFlags),
        .target(name: "Plot", dependencies: ["CCairo"]),
        .target(name: "Images", dependencies: ["CTurboJPEG", "CPNG"]),
        .target(name: "Monitoring", dependencies: ["Coordinator",
                                                   .product(name: "Prometheus", package: "swift-prometheus"),
                                                   .product(name: "FlyingFox", package: "FlyingFox"),
                                                   .product(name: "FlyingSocks", package: "FlyingFox"),
                                                   // (swift-prometheus's own, named to pin them)
                                                   .product(name: "Atomics", package: "swift-atomics"),
                                                   .product(name: "CoreMetrics", package: "swift-metrics")]),
        .target(name: "Benchmarks", dependencies: ["Core", "Compression", "Steps", "Config", "Coordinator", "Kernels", "Model", "Optim", "Sparsity", "Training", "Transport", "Wire", .product(name: "Logging", package: "swift-log")], swiftSettings: numericFlags),
        .executableTarget(name: "svite", dependencies: [
            "Core", "Compression", "Steps", "Config", "Compute", "Model", "Kernels", "Benchmarks", "Datasets", "Training", "Coordinator", "Worker", "Wire", "Sparsity", "Pictures", "Transport", "Plot", "Monitoring", "Images",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: numericFlags),

        // Code only tests use (writers of data files the libraries only read).
        .target(name: "TestSupport", dependencies: ["Config", "Datasets", "CZlib", "Images"], path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Core", "Kernels"], swiftSettings: numericFlags),
        .testTarget(name: "SystemLibrariesTests", dependencies: ["CZeroMQ", "CLZ4", "CZlib"]),
        .testTarget(name: "PlotTests", dependencies: ["Plot"]),
        .testTarget(name: "ImagesTests", dependencies: ["Images"]),
        .testTarget(name: "ModelTests", dependencies: ["Core", "Model", "Kernels"],
                    swiftSettings: numericFlags),
        .testTarget(name: "WireTests", dependencies: ["Core", "Compression", "Steps", "Wire", "Sparsity", "Model", "TestSupport"], swiftSettings: numericFlags),
        .testTarget(name: "CompressionTests", dependencies: ["Core", "Compression", "Sparsity", "Model", "TestSupport"], swiftSettings: numericFlags),
        .testTarget(name: "SparsityTests", dependencies: ["Core", "Sparsity", "Model", "Kernels", "Pictures", "CZlib"], swiftSettings: numericFlags),
        .testTarget(name: "TransportTests", dependencies: ["Transport"]),
        // One test target per module or concern; the network tests (a coordinator and
        // workers over loopback or namespaces) and the command-line tests (the svite binary)
        // are concerns of their own.
        .testTarget(name: "DatasetsTests", dependencies: ["Core", "Config", "Datasets", "Images", "Kernels", "Training", "TestSupport",
                                                       .product(name: "Logging", package: "swift-log")], swiftSettings: numericFlags),
        .testTarget(name: "ConfigTests", dependencies: ["Core", "Config", "Datasets", "Model", "Optim", "Sparsity", "Training", "TestSupport"],
                    swiftSettings: numericFlags),
        .testTarget(name: "TrainingTests", dependencies: ["Core", "Config", "Compute", "Compression", "Steps", "TestSupport", "Training", "Datasets",
                                                       "Optim", "Model", "Kernels", "Sparsity", "Pictures", "Wire",
                                                       .product(name: "Logging", package: "swift-log")],
                    swiftSettings: numericFlags),
        .testTarget(name: "CoordinatorTests", dependencies: ["Core", "Config", "Model", "Training", "Coordinator", "Monitoring", "Wire", "TestSupport"],
                    swiftSettings: numericFlags),
        .testTarget(name: "ClusterTests", dependencies: ["Core", "Config", "Compute", "TestSupport", "Training", "Datasets", "Optim", "Model", "Kernels",
                                                      "Sparsity", "Coordinator", "Worker", "Transport", "Compression", "Steps", "Wire", "Monitoring",
                                                      .product(name: "Logging", package: "swift-log")],
                    swiftSettings: numericFlags),
        .testTarget(name: "CommandLineTests", dependencies: ["Config", "Core", "Training", "TestSupport", .product(name: "Logging", package: "swift-log")]),
    ]
)
