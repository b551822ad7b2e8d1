import Foundation
import Model

/// The PyTorch/timm reference (`benchmarks/reference.py`), run as a child process beside
/// `svite bench model` so that both sides are timed in one command on one machine: on
/// these VMs only same-run ratios mean anything.
public struct PyTorchReference {
    public struct Timing: Codable, Sendable {
        public var medianMs: Double
        public var samplesMs: [Double]
        public var imagesPerSecond: Double
    }

    public struct Pass: Codable, Sendable {
        public var trainStep: Timing
        public var inference: Timing
    }

    public struct Result: Codable, Sendable {
        public var torch: String
        public var timm: String
        public var threads: Int
        public var batch: Int
        public var parameters: Int
        /// By precision: "fp32", "bf16" (autocast).
        public var results: [String: Pass]
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The interpreter: SVITE_REFERENCE_PYTHON, else /opt/ref/bin/python3 (the venv the
    /// docs set up), else python3 on PATH.
    public static func python(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let p = environment["SVITE_REFERENCE_PYTHON"], !p.isEmpty { return p }
        if FileManager.default.isExecutableFile(atPath: "/opt/ref/bin/python3") { return "/opt/ref/bin/python3" }
        return "python3"
    }

    /// The script: SVITE_REFERENCE_SCRIPT, else benchmarks/reference.py under the working
    /// directory or above the binary (a checkout's .build/release/svite).
    public static func script(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        let fm = FileManager.default
        if let s = environment["SVITE_REFERENCE_SCRIPT"], !s.isEmpty { return s }
        var candidates = ["benchmarks/reference.py"]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0 ..< 4 {
            candidates.append(dir.appendingPathComponent("benchmarks/reference.py").path)
            dir = dir.deletingLastPathComponent()
        }
        return candidates.first { fm.fileExists(atPath: $0) }
    }

    public let config: ViTConfig
    public let batch: Int
    public let threads: Int
    public var warmup = 2
    public var repeats = 5
    public var precisions: [String] = ["fp32", "bf16"]

    public init(config: ViTConfig, batch: Int, threads: Int) {
        self.config = config; self.batch = batch; self.threads = threads
    }

    public func run() throws -> Result {
        guard let script = Self.script() else {
            throw Failure(message: "benchmarks/reference.py not found: run from the repository, or set SVITE_REFERENCE_SCRIPT")
        }
        let c = config
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [Self.python(), script, "--image-size", "\(c.imageSize)", "--patch-size", "\(c.patchSize)",
                       "--in-channels", "\(c.inChannels)", "--num-classes", "\(c.numClasses)", "--dim", "\(c.dim)",
                       "--depth", "\(c.depth)", "--heads", "\(c.heads)", "--mlp-ratio", "\(c.mlpRatio)",
                       "--batch", "\(batch)", "--threads", "\(threads)", "--warmup", "\(warmup)", "--repeats", "\(repeats)",
                       "--precisions", precisions.joined(separator: ",")]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch {
            throw Failure(message: "cannot start \(Self.python()): \(error)")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let dec = JSONDecoder()
        dec.keyDecodingStrategy = .convertFromSnakeCase
        if let e = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let msg = e["error"] as? String {
            throw Failure(message: "the PyTorch reference cannot run: \(msg). Install it outside the repository: python3 -m venv /opt/ref && /opt/ref/bin/pip install torch timm safetensors (or set SVITE_REFERENCE_PYTHON)")
        }
        guard p.terminationStatus == 0, let r = try? dec.decode(Result.self, from: data) else {
            let tail = errText.split(separator: "\n").suffix(5).joined(separator: "\n")
            throw Failure(message: "the PyTorch reference (\(Self.python()) \(script)) failed with status \(p.terminationStatus)\(tail.isEmpty ? "" : ":\n\(tail)")")
        }
        return r
    }
}

/// svite's timings in each precision beside the reference's, from one command.
public struct ReferenceComparison: Codable, Sendable {
    public var svite: [ModelBenchmark.Result]
    public var reference: PyTorchReference.Result

    public init(svite: [ModelBenchmark.Result], reference: PyTorchReference.Result) {
        self.svite = svite; self.reference = reference
    }

    public var table: String {
        guard let first = svite.first else { return "" }
        var lines = ["", "Same run against PyTorch \(reference.torch) / timm \(reference.timm) (timm VisionTransformer, \(reference.parameters) parameters), \(first.config), batch \(first.batch), \(reference.threads) threads:",
                     "pass         svite precision   svite img/s   PyTorch fp32 img/s   ratio   PyTorch bf16-autocast img/s   ratio"]
        let r32 = reference.results["fp32"], r16 = reference.results["bf16"]
        func cell(_ mine: Double, _ theirs: Double?) -> String {
            guard let t = theirs else { return "                   –       –" }
            return String(format: "%20.1f  %5.2fx", t, mine / t)
        }
        for s in svite {
            let p = s.precision.rawValue
            let name = p.padding(toLength: 15, withPad: " ", startingAt: 0)
            lines.append("train step   \(name) " + String(format: "%13.1f ", s.trainStep.imagesPerSecond)
                + cell(s.trainStep.imagesPerSecond, r32?.trainStep.imagesPerSecond) + "   "
                + cell(s.trainStep.imagesPerSecond, r16?.trainStep.imagesPerSecond))
            lines.append("inference    \(name) " + String(format: "%13.1f ", s.forward.imagesPerSecond)
                + cell(s.forward.imagesPerSecond, r32?.inference.imagesPerSecond) + "   "
                + cell(s.forward.imagesPerSecond, r16?.inference.imagesPerSecond))
        }
        lines.append("(train step: forward, label-smoothed cross-entropy, backward and AdamW on both sides; svite's inference includes the loss)")
        return lines.joined(separator: "\n")
    }
}
