import Config
import Datasets
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// What many test targets share: temporary directories, synthetic data, the tiny run
// config, free ports, the svite binary.

/// A fresh temporary directory, removed when the closure returns.
public func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("svite-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

public let repoRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The debug svite binary the process tests run (`environment` may name another one);
/// throws when it is not built, which fails the test that asked.
public func sviteBinary(environment key: String? = nil) throws -> String {
    let exe = key.flatMap { ProcessInfo.processInfo.environment[$0] } ?? "\(repoRoot)/.build/debug/svite"
    guard FileManager.default.isExecutableFile(atPath: exe) else { throw FixtureError("\(exe) not built (swift build first)") }
    return exe
}

/// A started svite process, its output discarded unless `output` is given; `environment`
/// adds to this process's.
public func startSvite(_ exe: String, _ args: [String], output: Pipe? = nil, environment: [String: String] = [:]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
    p.standardOutput = output ?? FileHandle.nullDevice
    p.standardError = output ?? FileHandle.nullDevice
    try p.run()
    return p
}

/// A small MNIST-format data set in `dir`: `count` 28×28 images whose label is drawn as a
/// bright horizontal bar at row 2·label + 4, plus noise, so a model can learn it quickly.
/// `draw` replaces the picture: it gets the zeroed 784 pixels, the label and the stream.
public func writeSyntheticIDX(dir: String, train: Int, test: Int, seed: UInt64 = 7,
                       draw: (inout [UInt8], Int, inout SplitMix) -> Void = { image, label, rng in
                           for p in image.indices { image[p] = UInt8(rng.next() % 60) }
                           for x in 4 ..< 24 { image[(2 * label + 4) * 28 + x] = 255 }
                       }) throws {
    var rng = SplitMix(seed)
    for (prefix, count) in [("train", train), ("t10k", test)] {
        var pixels = [UInt8](repeating: 0, count: count * 784)
        var labels = [UInt8](repeating: 0, count: count)
        for i in 0 ..< count {
            let label = Int(rng.next() % 10)
            labels[i] = UInt8(label)
            var image = [UInt8](repeating: 0, count: 784)
            draw(&image, label, &rng)
            pixels.replaceSubrange((i * 784) ..< ((i + 1) * 784), with: image)
        }
        try Gzip.write("\(dir)/\(prefix)-images-idx3-ubyte.gz", IDXArray(dimensions: [count, 28, 28], bytes: pixels).encoded())
        try Gzip.write("\(dir)/\(prefix)-labels-idx1-ubyte.gz", IDXArray(dimensions: [count], bytes: labels).encoded())
    }
}

/// Step deadlines an hour long: tests that compare runs to the float (bit for bit, or with
/// the one-process run) must not see a worker left out of a step because the machine was
/// busy for a few seconds.
public let noStepDeadlines = ["communication.step_deadline_floor_seconds=3600", "communication.step_deadline_ceiling_seconds=3600"]

/// A run config for a very small ViT on the synthetic data in `dir`. Its masked layers run
/// on the sparse kernels whatever they cost (`auto` measures, and may choose otherwise in a
/// resumed run or another process, which tests that compare runs bit for bit cannot have).
/// Its workers send every value for the same reason (`gradient_density: auto` measures).
public func tinyRunConfig(dataDir: String, extra: [String] = []) throws -> RunConfig {
    let yaml = """
    name: tiny
    model: {image_size: 28, patch_size: 7, in_channels: 1, num_classes: 10, dim: 16, depth: 2, heads: 2, mlp_ratio: 2}
    data: {dataset: mnist, dir: \(dataDir), augmentation: {random_crop_padding: 2, horizontal_flip: true}}
    optimizer: {name: adamw, lr: 3.0e-3, weight_decay: 0.05}
    schedule: {warmup_steps: 2}
    training: {epochs: 2, batch_size: 16, label_smoothing: 0.1, seed: 5, log_every_steps: 1, threads: 2, eval_batch_size: 32}
    compute: {sparse_kernels: on}
    communication: {gradient_density: 1}
    """
    return try RunConfig.parse(yaml: yaml, file: "tiny.yaml", overrides: extra)
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound and released; the process under
/// test binds it next).
public func freePort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw FixtureError("no free port on 127.0.0.1: \(String(cString: strerror(errno)))") }
    return UInt16(bigEndian: a.sin_port)
}

public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
