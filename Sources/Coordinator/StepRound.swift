import Config
import Core
import Training
import Wire

/// One step's round (ps-lite's Customer: the requests out, the replies pending): who takes
/// part, the order their gradients are added in, which answers came before their turn,
/// who is late or refused, and the merged gradient. It holds no socket and reads no clock:
/// the coordinator's service feeds it what happened and when, so it is tested alone.
///
/// Gradients are added in the order of the members' names, not of arrival: the float
/// rounding of the sum, and with it the run, does not depend on who answered first or who
/// joined first (a run resumed after a crash repeats the uninterrupted one bit for bit).
final class StepRound {
    let step: Int
    /// The round's members (benched ones sit it out), in name order.
    let members: [WorkerRecord]
    /// The images the step asked for.
    let planned: Int
    let aggregator: GradientAggregator
    /// Members whose gradient has not been added yet (arrived or not).
    private(set) var pending: Set<[UInt8]> = []
    /// Members with a share, in the order their gradients are added.
    private(set) var order: [[UInt8]] = []
    private var next = 0
    /// Answers that arrived before their turn.
    private var early: [[UInt8]: (payload: [UInt8], bytes: Int, at: Double)] = [:]
    /// The images each member's gradient brought (a late, lost or refused one brings none).
    private var images: [[UInt8]: Int] = [:]
    /// The answers added so far (images, seconds): they judge a worker not yet measured.
    private(set) var answers: [(images: Int, seconds: Double)] = []
    /// Members taken off this step for missing its deadline.
    var late: [String] = []
    /// Answers refused (unusable frames from members the round waited for), of them the
    /// non-finite ones, and the last refusal.
    private(set) var refused = 0
    private(set) var nonFinite = 0
    private(set) var lastRefusal: String?
    /// The round waits for answers (false once it is complete or given up).
    var active = true
    /// Bytes of the step frames sent and of the gradients added.
    var bytesDown = 0
    private(set) var bytesUp = 0
    /// The last added answer's arrival and the slowest worker's own seconds (its summary):
    /// with the frames' sending, they split the round into the wire's time and compute.
    private var lastAnswerAt: Double?
    private var slowestCompute = 0.0

    init(step: Int, members: [WorkerRecord], planned: Int, aggregator: GradientAggregator) {
        self.step = step; self.members = members; self.planned = planned; self.aggregator = aggregator
    }

    /// The round waits for `w`'s answer to the share just sent to it.
    func expect(_ w: WorkerRecord) {
        pending.insert(w.identity)
        order.append(w.identity)
    }

    /// Whether the round still waits for this peer's answer (it is pending and has not sent one).
    func awaits(_ identity: [UInt8]) -> Bool { pending.contains(identity) && early[identity] == nil }

    /// Whether this peer's answer is one the round can take: for this step, from a member
    /// it waits for, the first one.
    func accepts(_ identity: [UInt8], step s: Int) -> Bool { s == step && awaits(identity) }

    /// An answer arrived: it waits for its turn, then is added.
    func arrived(_ identity: [UInt8], payload: [UInt8], bytes: Int, at: Double) {
        early[identity] = (payload, bytes, at)
    }

    /// Adds the answers whose turn has come: the next member of `order` whose answer is
    /// here; one the round no longer waits for (lost, left, refused) is skipped. Returns the
    /// answers that could not be used (their members still pending), for the caller to
    /// count, log and `refuse`.
    func addInOrder(_ member: ([UInt8]) -> WorkerRecord?) -> [(identity: [UInt8], error: Error)] {
        var bad: [([UInt8], Error)] = []
        while next < order.count {
            let identity = order[next]
            if let e = early.removeValue(forKey: identity) {
                next += 1
                guard let w = member(identity), pending.contains(identity) else { continue }
                do {
                    let summary = try aggregator.add(payload: e.payload)
                    w.measured(images: Int(summary.images), seconds: e.at - w.sentAt)
                    w.deadline.answered(at: e.at)
                    images[identity] = Int(summary.images)
                    answers.append((Int(summary.images), e.at - w.sentAt))
                    lastAnswerAt = max(lastAnswerAt ?? e.at, e.at)
                    slowestCompute = max(slowestCompute, Double(summary.computeSeconds))
                    bytesUp += e.bytes
                    w.stepsDone += 1
                    pending.remove(identity)
                } catch {
                    bad.append((identity, error))
                }
            } else if pending.contains(identity) {
                break  // its turn, not here yet
            } else {
                next += 1
            }
        }
        return bad
    }

    /// The round stops waiting for a member (lost, left, rejoined, late), except for an
    /// answer of it that is already here: that one is still added in its turn.
    func stopWaiting(for identity: [UInt8]) {
        if early[identity] == nil { pending.remove(identity) }
    }

    /// A member's answer could not be used: it will not send another, so the step goes on
    /// without its share instead of waiting for it (an answer of it already here is still
    /// added in its turn).
    func refuse(_ identity: [UInt8], name: String, _ error: Error) {
        refused += 1
        if case .nonFinite? = error as? WireError { nonFinite += 1 }
        lastRefusal = "\(name): \(error)"
        stopWaiting(for: identity)
    }

    /// Every answer is in, or not waited for any more.
    var isComplete: Bool { pending.isEmpty }

    /// The members still waited for whose answer is overdue at `now`, each with the seconds
    /// it was allowed (`StepDeadline`; a member sent the whole state this round has the ceiling).
    func overdue(now: Double, member: ([UInt8]) -> WorkerRecord?, policy: DeadlinePolicy) -> [(WorkerRecord, allowed: Double)] {
        let rate = StepDeadline.roundRate(answers: answers)
        let straggler = StepDeadline.stragglerSeconds(answers: answers, members: order.count, policy: policy) ?? .infinity
        return pending.sorted { $0.lexicographicallyPrecedes($1) }.compactMap { identity -> (WorkerRecord, allowed: Double)? in
            guard early[identity] == nil, let w = member(identity) else { return nil }
            let allowed = w.stateSentInRound == step ? policy.ceilingSeconds
                : min(StepDeadline.seconds(share: w.share, throughput: w.throughput, roundRate: rate, policy: policy), straggler)
            return now - w.sentAt > allowed ? (w, allowed) : nil
        }
    }

    /// The merged gradient (nil when no images arrived), with the images each member brought
    /// and those no gradient brought.
    func finish() -> StepGradient? {
        var result = aggregator.finish(bytesUp: bytesUp, bytesDown: bytesDown, workers: members.count)
        result?.workerImages = members.map { images[$0.identity] ?? 0 }
        result?.missingImages = max(0, planned - aggregator.images)
        result?.timing = timing
        return result
    }

    /// The round's time, from its first step frame to its last answer, and its slowest
    /// worker's computing; nil for a round that is no measure of the wire (someone missed
    /// it, or was sent the whole state in it).
    var timing: RoundTiming? {
        let sharers = members.filter { images[$0.identity] != nil }
        guard let end = lastAnswerAt, sharers.count == order.count, late.isEmpty,
              !sharers.contains(where: { $0.stateSentInRound == step }),
              let start = sharers.map(\.sentAt).min(), end > start else { return nil }
        return RoundTiming(roundSeconds: end - start, computeSeconds: slowestCompute)
    }
}
