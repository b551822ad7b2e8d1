import Compression
import Config
import Coordinator
import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Steps
import Training
import Transport
import Wire

/// `svite bench cluster`: the real coordinator (its socket thread, the aggregator, the
/// optimizer, the downlink) driven by N simulated workers on loopback. The workers live in
/// one thread of this process with one DEALER socket each: they join, and answer every
/// step's frame at once with a gradient frame built beforehand (a dense fp32 gradient, or
/// each worker's own top-k of a random gradient at the run's density, as a real worker
/// would send), so what is timed is the coordinator. Its CPU is the process's minus the
/// simulated workers' thread.
public struct ClusterBenchmark {
    public struct Options: Sendable {
        public var config: RunConfig
        public var workers: [Int] = [1, 2, 4, 8, 16, 32, 64]
        /// nil: dense fp32 gradients up and the weights down (the uncompressed run).
        public var density: Double? = 0.01
        public var codec: ValueCodec = .bf16
        public var steps = 10
        public var compress = true
        public init(config: RunConfig) { self.config = config }
    }

    public struct Result: Codable, Sendable {
        public var config: String
        public var parameters: Int
        public var workers: Int
        public var mode: String
        public var stepsPerSecond: Double
        /// Wall time of a step at the coordinator, the simulated workers answering at once.
        public var msPerStep: Double
        /// The coordinator's CPU per step (the process's minus the simulated workers').
        public var coordinatorCPUmsPerStep: Double
        public var bytesUpPerWorkerStep: Double
        public var bytesDownPerWorkerStep: Double
        /// Through the coordinator's NIC per step, both ways, all workers.
        public var bytesPerStep: Double
        /// Whether one step per second per worker fits: the coordinator's step under 1 s of
        /// CPU and its traffic under 10 Gbit/s.
        public var keepsUpAtOneStepPerSecondOn10GbE: Bool
        public var machine: MachineInfo
    }

    public let options: Options
    public init(_ options: Options) { self.options = options }

    public func run(log: Logger) throws -> [Result] {
        try options.workers.map { try run(workers: $0, log: log) }
    }

    func run(workers n: Int, log: Logger) throws -> Result {
        var config = options.config
        config.sparsity = SparsityConfig()
        config.communication = CommunicationConfig()
        if let d = options.density { config.communication.gradientDensity = d }
        let model = ViTModel(config: config.model)
        let layout = model.layout
        var co = ClusterOptions()
        co.bind = "tcp://127.0.0.1:*"
        co.statusBind = nil
        co.expectedWorkers = n
        co.workerTimeout = 60
        co.heartbeatSeconds = 5
        co.gradientCodec = options.codec
        co.compress = options.compress
        let source = try ClusterGradientSource(config: config, options: co, logger: log)
        let schedule = LRSchedule(config.schedule, base: config.optimizer.lr, totalSteps: 1000, stepsPerEpoch: 100)
        let server = ServerState(model: model, optimizer: config.optimizer, schedule: schedule)
        Initializer.initialize(server.params, layout: layout, seed: 1)
        source.attach(server: server)

        let payloads = Self.gradientPayloads(layout: layout, workers: n, density: options.density, codec: options.codec)
        let farm = WorkerFarm(endpoint: source.endpoint, workers: n, runID: source.runID, layout: layout, payloads: payloads,
                              compress: options.compress)
        let farmThread = Thread { farm.run() }
        farmThread.start()
        defer { farm.stop(); while farmThread.isExecuting { usleep(1000) } }

        let batch = max(n, config.training.batchSize)
        let stop = StopFlag()
        var timed = (wall: 0.0, cpu: 0.0, farmCPU: 0.0, up: 0, down: 0, steps: 0)
        let warm = 2
        for step in 0 ..< warm + options.steps {
            let work = StepWork(step: step, epoch: 0, stepInEpoch: step, positions: 0 ..< batch,
                                order: StepOrder(compression: options.density.map { .topK(density: $0) } ?? .dense))
            let clock = MonotonicClock(), cpu = ProcessCPUClock()
            let farmBefore = farm.cpuSeconds
            guard let g = try source.gradient(params: server.params.pointer, work: work, stop: stop) else { break }
            let update = server.apply(averagedGradient: g.gradient)
            source.applied(AppliedStep(step: step, report: update, record: update.record), server: server)
            if step >= warm {
                timed.wall += clock.seconds; timed.cpu += cpu.seconds; timed.farmCPU += farm.cpuSeconds - farmBefore
                timed.up += g.bytesUp; timed.down += g.bytesDown; timed.steps += 1
            }
        }
        source.finish(reason: "benchmark done")
        let steps = Double(max(1, timed.steps))
        let perStep = timed.wall / steps
        let cpuPerStep = max(0, timed.cpu - timed.farmCPU) / steps
        let bytes = Double(timed.up + timed.down) / steps
        let mode = options.density.map { "top-k \(String(format: "%g", $0 * 100))% \(options.codec)" } ?? "dense fp32"
        return Result(config: config.name, parameters: layout.parameterCount, workers: n, mode: mode,
                      stepsPerSecond: 1 / max(perStep, 1e-9), msPerStep: perStep * 1000, coordinatorCPUmsPerStep: cpuPerStep * 1000,
                      bytesUpPerWorkerStep: Double(timed.up) / steps / Double(n), bytesDownPerWorkerStep: Double(timed.down) / steps / Double(n),
                      bytesPerStep: bytes, keepsUpAtOneStepPerSecondOn10GbE: cpuPerStep < 1 && bytes * 8 < 10e9,
                      machine: MachineInfo.current())
    }

    /// Each worker's gradient payload: dense fp32 (one, shared), or per worker the top-k of
    /// its own random gradient, so the coordinator merges N different sets as in a run.
    static func gradientPayloads(layout: ParameterLayout, workers: Int, density: Double?, codec: ValueCodec) -> [[UInt8]] {
        let summary = GradientSummary(images: 32, lossSum: 70, correct: 10)
        let g = FloatBuffer(count: layout.count)
        var rng = Xoshiro256(seed: 7)
        func fill() { for i in 0 ..< layout.count { g.pointer[i] = rng.nextNormal() * 1e-3 } }
        guard let density else {
            fill()
            return [Payload.grads(summary, codec: .fp32, values: g.pointer, count: layout.count)]
        }
        return (0 ..< workers).map { _ in
            fill()
            let sparse = TopKCompressor(layout: layout).compress(g.pointer, mask: nil, density: density, settings: TopKSettings(codec: codec, denseVectors: true))
            return Payload.sparseGrads(summary, codec: codec, sparse: sparse, layout: layout)
        }
    }

    public static func table(_ rows: [Result]) -> String {
        var s = "config       params  mode             workers  steps/s  ms/step  coord CPU ms  up/worker   down/worker  total/step  10GbE 1 step/s\n"
        for r in rows {
            s += String(format: "%-12@ %6.2fM  %-16@ %7d  %7.1f  %7.1f  %12.1f  %10@  %11@  %10@  %@\n",
                        r.config as NSString, Double(r.parameters) / 1e6, r.mode as NSString, r.workers, r.stepsPerSecond, r.msPerStep,
                        r.coordinatorCPUmsPerStep, Self.bytes(r.bytesUpPerWorkerStep) as NSString, Self.bytes(r.bytesDownPerWorkerStep) as NSString,
                        Self.bytes(r.bytesPerStep) as NSString, (r.keepsUpAtOneStepPerSecondOn10GbE ? "yes" : "no") as NSString)
        }
        return s
    }

    static func bytes(_ b: Double) -> String {
        b >= 1_048_576 ? String(format: "%.2f MiB", b / 1_048_576) : String(format: "%.1f KiB", b / 1024)
    }
}

/// N simulated workers on one thread: DEALER sockets that join and answer each step frame
/// with their prepared gradient (the frame header names the step; the payload is fixed).
final class WorkerFarm: @unchecked Sendable {
    let endpoint: String
    let workers: Int
    let runID: UInt64
    let layout: ParameterLayout
    let payloads: [[UInt8]]
    let compress: Bool
    private let lock = NSLock()
    private var stopping = false
    private var cpu = 0.0
    var cpuSeconds: Double { lock.lock(); defer { lock.unlock() }; return cpu }

    init(endpoint: String, workers: Int, runID: UInt64, layout: ParameterLayout, payloads: [[UInt8]], compress: Bool) {
        self.endpoint = endpoint; self.workers = workers; self.runID = runID; self.layout = layout
        self.payloads = payloads; self.compress = compress
    }

    func stop() { lock.lock(); stopping = true; lock.unlock() }

    static func threadCPU() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    func run() {
        do { try serve() } catch { FileHandle.standardError.write(Data("simulated workers stopped: \(error)\n".utf8)) }
    }

    private func serve() throws {
        let context = try ZMQContext()
        var sockets: [ZMQSocket] = []
        for k in 0 ..< workers {
            let s = try ZMQSocket.workerDealer(context, identity: "sim-\(k)", maxMessageBytes: -1, heartbeatMs: 5000)
            try s.connect(endpoint)
            let join = JoinMessage(name: "sim-\(k)", host: "bench", pid: getpid(), threads: 1)
            let header = FrameHeader(type: .join, runID: 0, step: 0, layoutHash: layout.hash)
            _ = try s.send([Frame(header: header, payload: Payload.encodeJSON(join)).encoded()])
            sockets.append(s)
        }
        // One encoded frame per (payload, step): the dense payload is shared by everyone.
        var encoded: [Int: (step: UInt64, bytes: [UInt8])] = [:]
        while true {
            lock.lock(); let done = stopping; lock.unlock()
            if done { break }
            let start = Self.threadCPU()
            let ready = try Poller.readable(sockets, timeoutMs: 20)
            for (k, s) in sockets.enumerated() where ready[k] {
                while let parts = try s.receive() {
                    // Only the header: a real worker's decoding is not the coordinator's cost.
                    guard let bytes = parts.last, let seen = Frame.peek(bytes), seen.type == .params else { continue }
                    let p = payloads.count == 1 ? 0 : k
                    if encoded[p]?.step != seen.step {
                        let header = FrameHeader(type: .grads, runID: runID, step: seen.step, maskVersion: 0, layoutHash: layout.hash)
                        encoded[p] = (seen.step, Frame(header: header, payload: payloads[p]).encoded(compress: compress))
                    }
                    _ = try s.send([encoded[p]!.bytes])
                }
            }
            let spent = Self.threadCPU() - start
            lock.lock(); cpu += spent; lock.unlock()
        }
        for s in sockets { try? s.setLinger(milliseconds: 0); s.close() }
    }
}
