import Core
import Foundation
import Logging
import Synchronization
import Training
import Transport

/// The coordinator's transport (ps-lite's Van): the workers' ROUTER, the status REP, the
/// wake pair that lets the trainer's thread interrupt a poll, and the CURVE gatekeeper.
/// Everything but `wake` belongs to the service thread.
final class CoordinatorSockets {
    let endpoint: String
    let statusEndpoint: String?
    private let context: ZMQContext
    private let router: ZMQSocket
    private let status: ZMQSocket?
    private let wakeIn: ZMQSocket
    private let wakeOut: ZMQSocket
    private let wakeLock = NSLock()
    /// Set by `close` (under `wakeLock`): a late `wake` must not touch a closed socket.
    private var closed = false
    /// The CURVE gatekeeper (ZAP handler and handshake monitors), when the run has keys.
    private let curveGuard: CurveGuard?
    private let statusCurve: Bool

    /// What a poll found readable.
    struct Ready { var workers = false, wake = false, status = false }

    init(options: ClusterOptions, runID: UInt64, maxMessageBytes: Int, log: Logger) throws {
        context = try ZMQContext()
        // The ZAP handler is bound before any CURVE socket binds: a CURVE server with no
        // handler admits every client that knows its public key.
        let ctx = context
        curveGuard = try options.curve.map { keys in try CurveGuard(ctx, keys: keys) { log.warning("\($0)") } }
        router = try ZMQSocket.coordinatorRouter(context, maxMessageBytes: Int64(maxMessageBytes), heartbeatMs: Int32(options.heartbeatSeconds * 1000))
        if let keys = options.curve, let guardian = curveGuard {
            try router.makeCurveServer(secretKey: keys.secretKey)
            try guardian.watch(router, label: "workers")
        }
        endpoint = try router.bind(options.bind)
        if let s = options.statusBind {
            let rep = try ZMQSocket(context, .rep)
            // Status is read-only; on loopback it stays plaintext so `svite status` on the
            // head node needs no keys. Anywhere else it takes the same keys as the workers.
            statusCurve = options.curve != nil && (options.statusCurve ?? !Endpoint.isLoopback(s))
            if statusCurve, let keys = options.curve, let guardian = curveGuard {
                try rep.makeCurveServer(secretKey: keys.secretKey)
                try guardian.watch(rep, label: "status")
            }
            statusEndpoint = try rep.bind(s)
            status = rep
        } else {
            statusEndpoint = nil
            status = nil
            statusCurve = false
        }
        curveGuard?.start()
        let wake = "inproc://svite-coordinator-wake-\(String(runID, radix: 16))"
        wakeIn = try ZMQSocket(context, .pair)
        _ = try wakeIn.bind(wake)
        wakeOut = try ZMQSocket(context, .pair)
        try wakeOut.connect(wake)
        if let guardian = curveGuard {
            log.info("CURVE on: admitting \(guardian.allowedNames.count) key(s) from \(options.curve?.authorizedDirectory ?? "?") (\(guardian.allowedNames.joined(separator: ", ")))\(statusCurve ? "; the status socket too" : "")")
        } else if !Endpoint.isLoopback(options.bind) {
            log.warning("no CURVE keys: anyone who reaches \(endpoint) can join the run and send gradients (see `svite keygen --help`)")
        }
    }

    /// Waits up to `timeoutMs` for something to read; a wake is drained here.
    func poll(timeoutMs: Int) throws -> Ready {
        let r = try Poller.readable([router, wakeIn] + (status.map { [$0] } ?? []), timeoutMs: timeoutMs)
        if r[1] { while try wakeIn.receive() != nil {} }
        return Ready(workers: r[0], wake: r[1], status: r.count > 2 && r[2])
    }

    /// The next message from a worker (identity, frame), or nil when none is waiting.
    func receive() throws -> [[UInt8]]? { try router.receive() }

    func send(_ bytes: [UInt8], to identity: [UInt8]) throws { _ = try router.send([identity, bytes]) }

    /// Answers a status query when one is waiting (a REP socket must answer before it reads again).
    func answerStatus(_ document: () -> StatusDocument) throws -> Bool {
        guard let s = status, try s.receive() != nil else { return false }
        try StatusServer.answer(s, with: document())
        return true
    }

    /// Interrupts the service thread's poll (any thread).
    func wake() {
        wakeLock.lock(); defer { wakeLock.unlock() }
        guard !closed else { return }
        _ = try? wakeOut.send([[1]], dontWait: true)
    }

    var curveStatus: StatusDocument.CurveStatus? {
        curveGuard.map {
            let c = $0.snapshot
            return .init(authorizedKeys: $0.allowedNames, admitted: c.admitted, refusedKeys: c.refusedKeys,
                         refusedHandshakes: c.refusedHandshakes, lastRefusal: c.lastRefusal, statusSocketCurve: statusCurve)
        }
    }

    /// Lets the last frames (the stop) out, then closes everything and ends the context
    /// (on the service thread, so ZeroMQ's own threads are gone before the process ends).
    func close() {
        try? router.setLinger(milliseconds: 1000)
        wakeLock.lock()
        closed = true
        router.close(); status?.close(); wakeIn.close(); wakeOut.close()
        wakeLock.unlock()
        curveGuard?.stop()
        context.terminate()
    }
}

/// The status as other threads read it (the Prometheus endpoint, the trainer's metrics):
/// the document as of the last half second, and the membership changes not yet written
/// to metrics.jsonl. Membership itself belongs to the service thread.
final class StatusPublisher: Sendable {
    private struct State {
        var snapshot: (doc: StatusDocument, at: Double)?
        /// Bounded: a flapping worker must not grow it without end while no step runs.
        var events: [WorkerEvent] = []
    }
    private let state = Mutex(State())

    var document: StatusDocument? { state.withLock { $0.snapshot?.doc } }

    /// Makes a new document when the last is half a second old.
    func refresh(now: Double, _ make: () -> StatusDocument) {
        let last = state.withLock { s in s.snapshot?.at } ?? -1
        guard now - last >= 0.5 else { return }
        let doc = make()
        state.withLock { $0.snapshot = (doc, now) }
    }

    func record(_ e: WorkerEvent) {
        state.withLock {
            $0.events.append(e)
            if $0.events.count > 1000 { $0.events.removeFirst($0.events.count - 1000) }
        }
    }

    func drain() -> [WorkerEvent] { state.withLock { s in defer { s.events = [] }; return s.events } }
}
