import Compression
import Config
import Core
import Foundation
import Kernels
import Model
import Optim
import Training
import Steps
import Wire

/// `svite bench comm`: the coordinator's side of a step without the network: decode each
/// worker's gradient frame (checksums, LZ4, codec), average by images, apply AdamW, and
/// encode the next parameters frame for every worker. Measures how many frames and
/// steps per second one coordinator core sustains and the payload GB/s.
public struct CommBenchmark {
    public struct Options: Sendable {
        public var config: ViTConfig
        public var configName: String
        public var workers = 4
        public var codec: ValueCodec = .fp32
        public var compress = true
        public var steps = 10
        public init(config: ViTConfig, configName: String) { self.config = config; self.configName = configName }
    }

    public struct Result: Codable, Sendable {
        public var config: String
        public var parameters: Int
        public var workers: Int
        public var codec: String
        public var compressed: Bool
        public var gradientFrameBytes: Int
        public var paramsFrameBytes: Int
        /// A worker's side: one gradient frame encoded (codec, LZ4, checksums).
        public var gradientEncodeMsPerFrame: Double
        public var decodeAverageMsPerFrame: Double
        public var applyMsPerStep: Double
        public var encodeMsPerFrame: Double
        public var framesDecodedPerSecond: Double
        public var uplinkPayloadGBPerSecond: Double
        public var stepsPerSecond: Double
        public var machine: MachineInfo
    }

    public let options: Options
    public init(_ options: Options) { self.options = options }

    /// The size of a dense fp32 gradient frame of `config` as it goes on the wire (LZ4
    /// finds nothing to take out of float noise, so the frame stays raw).
    public static func gradientFrameBytes(config: ViTConfig) -> Int {
        let layout = ParameterLayout(config: config)
        let zeros = FloatBuffer(count: layout.count)
        let payload = Payload.grads(GradientSummary(images: 32, lossSum: 70, correct: 10), codec: .fp32, values: zeros.pointer, count: layout.count)
        return Frame(header: FrameHeader(type: .grads, runID: 1, step: 0, layoutHash: layout.hash), payload: payload).encoded(compress: false).count
    }

    public func run() throws -> Result {
        let o = options
        let layout = ParameterLayout(config: o.config)
        let n = layout.count
        var rng = Xoshiro256(seed: 3)
        let grads = FloatBuffer(count: n)
        for i in 0 ..< n { grads.pointer[i] = rng.nextNormal() * 1e-3 }
        let frames: [[UInt8]] = (0 ..< o.workers).map { k in
            let payload = Payload.grads(GradientSummary(images: 32, lossSum: 70, correct: 10), codec: o.codec, values: grads.pointer, count: n)
            return Frame(header: FrameHeader(type: .grads, runID: 1, step: UInt64(k), layoutHash: layout.hash), payload: payload)
                .encoded(compress: o.compress)
        }
        let limits = FrameLimits(maxRawBytes: 4 * n + 4096, runID: 1, layoutHash: layout.hash)
        let server = ServerState(model: ViTModel(config: o.config), optimizer: OptimizerConfig(),
                                 schedule: LRSchedule(base: 1e-3, totalSteps: 1000, warmupSteps: 0, warmupLR: 0, minLR: 0))
        Initializer.initialize(server.params, layout: layout, seed: 0)
        let averager = GradientAverager(count: n)
        let scratch = FloatBuffer(count: n)
        var decode = 0.0, apply = 0.0, encode = 0.0, gradientEncode = 0.0
        var paramsBytes = 0
        for step in -1 ..< o.steps {  // step −1 warms up
            averager.reset()
            let tw = DispatchTime.now().uptimeNanoseconds
            let payload = Payload.grads(GradientSummary(images: 32, lossSum: 70, correct: 10), codec: o.codec, values: grads.pointer, count: n)
            _ = Frame(header: FrameHeader(type: .grads, runID: 1, step: 0, layoutHash: layout.hash), payload: payload).encoded(compress: o.compress)
            let t0 = DispatchTime.now().uptimeNanoseconds
            for f in frames {
                let frame = try Frame.decode(f, limits: limits)
                let s = try Payload.decodeGrads(frame.payload, into: scratch.pointer, count: n).summary
                averager.add(scratch.pointer, batch: Int(s.images))
            }
            averager.finish()
            let t1 = DispatchTime.now().uptimeNanoseconds
            server.apply(averagedGradient: averager.sum.pointer)
            let t2 = DispatchTime.now().uptimeNanoseconds
            for k in 0 ..< o.workers {
                let payload = Payload.params(StepFrame(order: StepOrder(), shares: .one(Assignment(epoch: 0, start: UInt32(k * 32), count: 32))),
                                             values: server.params.pointer, count: n)
                paramsBytes = Frame(header: FrameHeader(type: .params, runID: 1, step: UInt64(max(step, 0)), layoutHash: layout.hash), payload: payload)
                    .encoded(compress: o.compress).count
            }
            let t3 = DispatchTime.now().uptimeNanoseconds
            if step >= 0 {
                gradientEncode += Double(t0 - tw) / 1e9; decode += Double(t1 - t0) / 1e9; apply += Double(t2 - t1) / 1e9; encode += Double(t3 - t2) / 1e9
            }
        }
        let steps = Double(o.steps), w = Double(o.workers)
        let rawBytes = Double(4 * n)
        return Result(config: o.configName, parameters: layout.parameterCount, workers: o.workers,
                      codec: o.codec.rawValue, compressed: o.compress,
                      gradientFrameBytes: frames[0].count, paramsFrameBytes: paramsBytes,
                      gradientEncodeMsPerFrame: 1000 * gradientEncode / steps, decodeAverageMsPerFrame: 1000 * decode / (steps * w), applyMsPerStep: 1000 * apply / steps,
                      encodeMsPerFrame: 1000 * encode / (steps * w),
                      framesDecodedPerSecond: steps * w / decode,
                      uplinkPayloadGBPerSecond: steps * w * rawBytes / decode / 1e9,
                      stepsPerSecond: steps / (decode + apply + encode), machine: .current())
    }

    public static func table(_ rows: [Result]) -> String {
        var s = "config        params   workers codec  grad frame   params frame  grad encode ms  decode+avg ms/frame  apply ms/step  params encode ms  frames/s  uplink GB/s  steps/s\n"
        for r in rows {
            s += r.config.padding(toLength: 12, withPad: " ", startingAt: 0) + String(format: " %8d %8d  %@  %9.2f MB  %9.2f MB  %14.2f  %18.2f  %13.2f  %16.2f  %8.0f  %11.2f  %7.1f\n",
                        r.parameters, r.workers, r.codec as NSString,
                        Double(r.gradientFrameBytes) / 1e6, Double(r.paramsFrameBytes) / 1e6,
                        r.gradientEncodeMsPerFrame, r.decodeAverageMsPerFrame, r.applyMsPerStep, r.encodeMsPerFrame,
                        r.framesDecodedPerSecond, r.uplinkPayloadGBPerSecond, r.stepsPerSecond)
        }
        if let m = rows.first?.machine { s += "machine: \(m.summary)" }
        return s
    }
}
