import Wire

/// What the coordinator knows of one worker.
final class WorkerRecord {
    enum State: String { case ready, lost, left }
    let identity: [UInt8]
    let name: String
    var host: String
    var pid: Int32
    var threads: Int
    let rank: Int
    var state: State = .ready
    /// When a frame of this worker last arrived, and when the coordinator last sent it one.
    var lastHeard: Double
    var lastSent = -Double.infinity
    var stepsDone = 0
    /// Answers to a step refused (bad frame, NaN values, another mask version).
    var refused = 0
    /// Join frames accepted from this id (more than one: it restarted or lost the coordinator).
    var joins = 1
    var bytesUp = 0
    var bytesDown = 0
    /// The server step whose parameters the worker holds (−1: none).
    var version = -1
    /// The mask version the worker holds (−1: none yet).
    var maskVersion = -1
    /// Images of its last share, when its params frame left, and its measured speed
    /// (images per second from params sent to gradient back, smoothed; nil: not yet).
    var share = 0
    var sentAt = 0.0
    var throughput: Double?

    /// Folds in one step's speed.
    func measured(images: Int, seconds: Double) {
        guard images > 0, seconds > 0 else { return }
        let rate = Double(images) / seconds
        throughput = throughput.map { 0.7 * $0 + 0.3 * rate } ?? rate
    }

    init(identity: [UInt8], join: JoinMessage, rank: Int, now: Double) {
        self.identity = identity
        name = join.name; host = join.host; pid = join.pid; threads = join.threads
        self.rank = rank; lastHeard = now
    }
}

/// Who is in the run (ps-lite's Postoffice): joins and rejoins, ranks, liveness. It
/// holds no socket; the service thread tells it what arrived and when.
final class Membership {
    private(set) var records: [[UInt8]: WorkerRecord] = [:]
    private var nextRank = 0

    subscript(identity: [UInt8]) -> WorkerRecord? { records[identity] }

    /// Every worker ever seen, by rank.
    var all: [WorkerRecord] { records.values.sorted { $0.rank < $1.rank } }
    /// The workers that take part in the next step, by rank.
    var live: [WorkerRecord] { all.filter { $0.state == .ready } }

    /// A join: a new worker gets the next rank; a known id (a restarted worker, ROUTER_HANDOVER)
    /// keeps its rank and starts afresh, holding no parameters or mask.
    func admit(_ identity: [UInt8], join: JoinMessage, now: Double) -> (record: WorkerRecord, isNew: Bool) {
        if let old = records[identity] {
            old.state = .ready; old.host = join.host; old.pid = join.pid; old.threads = join.threads
            old.lastHeard = now; old.version = -1; old.maskVersion = -1
            old.joins += 1
            return (old, false)
        }
        let record = WorkerRecord(identity: identity, join: join, rank: nextRank, now: now)
        nextRank += 1
        records[identity] = record
        return (record, true)
    }

    /// Ready workers not heard from for longer than `timeout` seconds.
    func silent(now: Double, timeout: Double) -> [WorkerRecord] {
        all.filter { $0.state == .ready && now - $0.lastHeard > timeout }
    }

    /// Ready workers the coordinator has sent nothing for `interval` seconds.
    func quiet(now: Double, interval: Double) -> [WorkerRecord] {
        live.filter { now - $0.lastSent > interval }
    }
}
