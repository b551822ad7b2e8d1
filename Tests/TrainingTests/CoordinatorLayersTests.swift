import Foundation
import Kernels
import Logging
import Model
import Sparsity
import Testing
import Transport
import Wire
import Worker
@testable import Coordinator
@testable import Training

/// The coordinator's layers on their own: the aggregator without sockets, membership, and
/// the socket thread that keeps answering while the trainer is busy elsewhere.
@Suite("coordinator layers", .serialized)
struct CoordinatorLayersTests {
    let log = Logger(label: "test")

    func grads(_ values: [Float], images: UInt32, loss: Double, correct: UInt32, reply: StepReply = .none) -> [UInt8] {
        values.withUnsafeBufferPointer {
            Payload.grads(GradientSummary(images: images, lossSum: loss, correct: correct), codec: .fp32,
                          values: $0.baseAddress!, count: values.count, reply: reply)
        }
    }

    /// Two workers' packed gradients become the image-weighted mean in layout order (zero
    /// at pruned weights), their grow candidates the weighted mean at the named weights;
    /// a truncated payload or a reply that was not asked for adds nothing.
    @Test func aggregatorMergesRepliesInPackedSpace() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: ["sparsity.method=svite", "sparsity.sparsity=0.5"])
        let layout = ViTModel(config: config.model).layout
        let masks = MaskSet(for: config.sparsity, layout: layout)
        let n = masks.packedCount
        #expect(n < layout.count)
        let a = (0 ..< n).map { Float($0 % 7) - 3 }, b = (0 ..< n).map { Float($0 % 5) * 0.5 }
        let layers = masks.prunable.count
        let candA = (0 ..< layers).map { l in GrowCandidates(indices: l == 0 ? [0] : [], values: l == 0 ? [4] : []) }
        let candB = (0 ..< layers).map { l in GrowCandidates(indices: l == 0 ? [0] : [], values: l == 0 ? [-2] : []) }
        let aggregator = GradientAggregator(layout: layout, model: config.model)
        aggregator.begin(request: .growCandidates(multiplier: 1, perLayer: Array(repeating: 1, count: layers)), masks: masks)
        #expect(aggregator.finish(bytesUp: 0, bytesDown: 0, workers: 0) == nil, "no images, no gradient")

        try aggregator.add(payload: grads(a, images: 16, loss: 32, correct: 4, reply: .growCandidates(candA)))
        let good = grads(b, images: 48, loss: 48, correct: 40, reply: .growCandidates(candB))
        #expect(throws: WireError.self) { try aggregator.add(payload: Array(good.dropLast(3))) }
        #expect(throws: WireError.self) { try aggregator.add(payload: grads(b, images: 48, loss: 48, correct: 40, reply: .unitScores([1]))) }
        #expect(throws: WireError.self) { try aggregator.add(payload: grads(Array(b.dropLast()), images: 48, loss: 48, correct: 40)) }
        #expect(aggregator.images == 16)
        try aggregator.add(payload: good)

        let g = try #require(aggregator.finish(bytesUp: 10, bytesDown: 20, workers: 2))
        #expect(g.result.count == 64 && g.result.correct == 44 && g.result.lossSum == 80)
        #expect(g.bytesUp == 10 && g.bytesDown == 20 && g.workers == 2)
        let expected = FloatBuffer(count: n)
        for i in 0 ..< n { expected[i] = (16 * a[i] + 48 * b[i]) * (1 / Float(64)) }
        let full = FloatBuffer(count: layout.count)
        masks.unpack(expected.pointer, into: full.pointer)
        var mismatches = 0, activeNonZero = 0
        for i in 0 ..< layout.count {
            if g.gradient[i] != full[i] { mismatches += 1 }
            if masks.mask[i] == 0 && g.gradient[i] != 0 { activeNonZero += 1 }
        }
        #expect(mismatches == 0 && activeNonZero == 0)
        let score = try #require(g.growScore)
        let first = masks.prunable[0].offset
        #expect(score[first] == (16 * 4 + 48 * -2) * (1 / Float(64)))
        #expect(score[first + 1] == 0)
    }

    /// A join gets the next rank; the same id again keeps it and starts afresh; silence
    /// beyond the timeout is noticed.
    @Test func membershipRanksAndLiveness() {
        let m = Membership()
        let join = JoinMessage(name: "a", host: "h", pid: 1, threads: 2)
        let (a, newA) = m.admit([1], join: join, now: 0)
        let (b, newB) = m.admit([2], join: JoinMessage(name: "b", host: "h", pid: 2, threads: 1), now: 1)
        #expect(newA && newB && a.rank == 0 && b.rank == 1)
        a.version = 5; a.maskVersion = 3; a.state = .lost
        #expect(m.live.map(\.name) == ["b"])
        let (again, newAgain) = m.admit([1], join: join, now: 2)
        #expect(!newAgain && again === a && a.joins == 2 && a.rank == 0 && a.state == .ready && a.version == -1 && a.maskVersion == -1)
        #expect(m.live.map(\.name) == ["a", "b"])
        #expect(m.silent(now: 6.5, timeout: 5).map(\.name) == ["b"])
    }

    /// While the trainer evaluates 10,000 test images the socket thread keeps serving:
    /// the status socket answers with state "evaluating", and the worker hears the
    /// coordinator (it never asks to join again).
    @Test func statusAnswersDuringEvaluation() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 10_000)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=2", "training.eval_batch_size=250"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = "tcp://127.0.0.1:*"
            o.heartbeatSeconds = 0.2
            o.workerTimeout = 1
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let status = RunStatus(config: config, parameters: 1)
            source.runStatus = status
            let endpoint = source.endpoint, statusEndpoint = source.statusEndpoint!
            let worker = Thread {
                do {
                    var wo = WorkerOptions(coordinator: endpoint, name: "w", threads: 1)
                    wo.rejoinAfter = 0.8  // shorter than the evaluation: a silent coordinator would show
                    _ = try WorkerNode(options: wo, logger: Logger(label: "worker")).run()
                } catch {
                    Issue.record("worker: \(error)")
                }
            }
            worker.start()
            let answers = StateLog()
            let poller = Thread {
                while !answers.done {
                    if let doc = try? queryStatus(statusEndpoint, timeoutMs: 500), let state = doc["state"] as? String {
                        answers.add(state)
                    }
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let trainer = try Trainer(config: config, options: options, logger: log)
            var evaluatingSeen = false
            poller.start()
            _ = try trainer.run { event in
                status.observe(event)
                if case .evaluating = event, !evaluatingSeen {
                    evaluatingSeen = true
                    // Hold the evaluation until the poller has had an answer during it.
                    let deadline = Date().addingTimeInterval(10)
                    while !answers.states.contains("evaluating") && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
                    Thread.sleep(forTimeInterval: 1.2)  // longer than the worker's rejoin limit
                }
            }
            answers.done = true
            while poller.isExecuting || worker.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(evaluatingSeen)
            #expect(answers.states.contains("evaluating"), "status answers: \(answers.states)")
            let w = try #require(source.workers.values.first)
            #expect(source.workers.count == 1 && w.stepsDone == 2 && w.state == .ready)
            #expect(source.badFrameTotal == 0)
            #expect(w.joins == 1, "the worker asked to join \(w.joins) times")
        }
    }
}

final class StateLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _states: [String] = []
    private var _done = false
    var states: [String] { lock.lock(); defer { lock.unlock() }; return _states }
    var done: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _done }
        set { lock.lock(); _done = newValue; lock.unlock() }
    }
    func add(_ s: String) { lock.lock(); _states.append(s); lock.unlock() }
}
