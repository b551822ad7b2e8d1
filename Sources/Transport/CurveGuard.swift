import CZeroMQ
import Core
import Foundation

/// A failed handshake as a socket monitor reports it.
public struct HandshakeFailure: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable { case protocolError, authentication, unknown }
    public var kind: Kind
    /// The ZMTP protocol error, or the ZAP status code (400) for `authentication`.
    public var value: UInt32
    public var endpoint: String

    /// The peers use different security mechanisms (one has CURVE keys, the other none).
    public var isMechanismMismatch: Bool {
        kind == .protocolError && Int32(bitPattern: value) == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    }

    public var description: String {
        switch kind {
        case .authentication: "the server refused the key (ZAP status \(value)) on \(endpoint)"
        case .unknown: "handshake failed on \(endpoint)"
        case .protocolError:
            switch Int32(bitPattern: value) {
            case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "a peer without CURVE (plaintext or another mechanism) on \(endpoint)"
            case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "a handshake that does not decrypt (wrong server key?) on \(endpoint)"
            default: "ZMTP protocol error 0x\(String(value, radix: 16)) on \(endpoint)"
            }
        }
    }
}

/// What a socket monitor reports: a handshake that failed, one that completed (a
/// connection is up, e.g. to a coordinator that came back), a connection that dropped.
public enum SocketEvent: Sendable, Equatable {
    case handshakeFailed(HandshakeFailure)
    case connected(endpoint: String)
    case disconnected(endpoint: String)
}

/// Reads the handshake events of one socket (zmq_socket_monitor to an inproc PAIR).
/// Belongs to the thread that drains it, like any socket.
public final class HandshakeMonitor: @unchecked Sendable {
    public let socket: ZMQSocket
    let label: String

    /// Call on the thread that owns `watched`, before it binds or connects. With
    /// `connections`, completed handshakes and dropped connections are reported too.
    public init(_ context: ZMQContext, watching watched: ZMQSocket, label: String, connections: Bool = false) throws {
        var rng = SystemRandomNumberGenerator()
        let endpoint = "inproc://svite-monitor-\(label)-\(String(rng.next() as UInt64, radix: 16))"
        try watched.monitorHandshakes(endpoint, connections: connections)
        socket = try ZMQSocket(context, .pair)
        try socket.connect(endpoint)
        self.label = label
    }

    /// The failed handshakes reported since the last call.
    public func drain() throws -> [HandshakeFailure] {
        try drainEvents().compactMap { if case let .handshakeFailed(f) = $0 { f } else { nil } }
    }

    /// Every event reported since the last call, oldest first.
    public func drainEvents() throws -> [SocketEvent] {
        var out: [SocketEvent] = []
        while let parts = try socket.receive(dontWait: true) {
            guard parts.count >= 2, parts[0].count >= 6 else { continue }
            let event = Int32(UInt16(parts[0][0]) | UInt16(parts[0][1]) << 8)
            let value = parts[0][2 ..< 6].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            let endpoint = String(decoding: parts[1], as: UTF8.self)
            switch event {
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: out.append(.connected(endpoint: endpoint))
            case ZMQ_EVENT_DISCONNECTED: out.append(.disconnected(endpoint: endpoint))
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: out.append(.handshakeFailed(HandshakeFailure(kind: .authentication, value: value, endpoint: endpoint)))
            case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: out.append(.handshakeFailed(HandshakeFailure(kind: .protocolError, value: value, endpoint: endpoint)))
            default: out.append(.handshakeFailed(HandshakeFailure(kind: .unknown, value: value, endpoint: endpoint)))
            }
        }
        return out
    }

    public func close() { socket.close() }
}

/// The CURVE gatekeeper of a server, as libzmq's security model has it: a ZAP handler on
/// `inproc://zeromq.zap.01` that admits only the public keys in an allow-list directory,
/// and monitors of the guarded sockets that count the handshakes refused before ZAP is
/// asked (plaintext clients, wrong server keys). Every refusal is counted and logged
/// (at most 10 lines a minute; the rest are summed up).
///
/// Create it on the context of the sockets it guards *before* they bind: a CURVE server
/// with no ZAP handler bound admits any client that knows its public key.
public final class CurveGuard: @unchecked Sendable {
    public struct Counts: Sendable, Equatable {
        public var admitted = 0
        /// CURVE handshakes with a key not in the allow-list.
        public var refusedKeys = 0
        /// Handshakes that failed before ZAP: plaintext clients, wrong server key, garbage.
        public var refusedHandshakes = 0
        public var lastRefusal: String?
    }

    public static let zapEndpoint = "inproc://zeromq.zap.01"

    private let context: ZMQContext
    private let zap: ZMQSocket
    private var monitors: [HandshakeMonitor] = []
    private let directory: String
    private let log: @Sendable (String) -> Void
    private let lock = NSLock()
    private var counts = Counts()
    private var allowed: [[UInt8]: String] = [:]
    private var directoryStamp: timespec?
    private var started = false, stopping = false, stopped = false
    private var logWindowStart = Date(), logLinesInWindow = 0, suppressedInWindow = 0

    public init(_ context: ZMQContext, keys: CurveServerKeys, log: @escaping @Sendable (String) -> Void) throws {
        self.context = context
        directory = keys.authorizedDirectory
        self.log = log
        zap = try ZMQSocket(context, .rep)
        do { try zap.bind(CurveGuard.zapEndpoint) } catch {
            throw CurveError.badKey(path: CurveGuard.zapEndpoint, why: "another ZAP handler is bound in this process: \(error)")
        }
        try reloadIfChanged(force: true)
    }

    /// Counts the handshake failures of `socket` (call before `start`, on the thread that
    /// made `socket`).
    public func watch(_ socket: ZMQSocket, label: String) throws {
        precondition(!started, "CurveGuard.watch after start")
        monitors.append(try HandshakeMonitor(context, watching: socket, label: label))
    }

    public func start() {
        started = true
        let thread = Thread { [self] in loop() }
        thread.name = "svite-curve-zap"
        thread.start()
    }

    /// Stops the thread and closes its sockets (before the context ends).
    public func stop() {
        lock.lock()
        stopping = true
        let wasStarted = started
        lock.unlock()
        if !wasStarted { zap.close(); monitors.forEach { $0.close() }; return }
        while true {
            lock.lock(); let done = stopped; lock.unlock()
            if done { return }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    public var snapshot: Counts { lock.lock(); defer { lock.unlock() }; return counts }

    /// The names of the admitted keys (file names without `.key`).
    public var allowedNames: [String] { lock.lock(); defer { lock.unlock() }; return allowed.values.sorted() }

    private func loop() {
        defer {
            zap.close(); monitors.forEach { $0.close() }
            lock.lock(); stopped = true; lock.unlock()
        }
        let sockets = [zap] + monitors.map(\.socket)
        while true {
            lock.lock(); let quit = stopping; lock.unlock()
            if quit { return }
            do {
                let ready = try Poller.readable(sockets, timeoutMs: 100)
                if ready[0], let request = try zap.receive(dontWait: true) { try zap.send(answer(request)) }
                for (m, r) in zip(monitors, ready.dropFirst()) where r {
                    // Authentication failures are ZAP's own refusals, counted there; a ZAP refusal
                    // also ends in a no-detail event. Protocol errors are the ones ZAP never saw.
                    for failure in try m.drain() where failure.kind == .protocolError {
                        refuse(handshake: failure)
                    }
                }
            } catch {
                log("CURVE guard: \(error) (going on)")
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    /// The ZAP reply to one request (RFC 27): 200 for a listed CURVE key, 400 otherwise.
    func answer(_ request: [[UInt8]]) -> [[UInt8]] {
        func reply(_ id: [UInt8], _ code: String, _ text: String, user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), id, Array(code.utf8), Array(text.utf8), Array(user.utf8), []]
        }
        guard request.count >= 6, String(decoding: request[0], as: UTF8.self) == "1.0" else {
            refuse(key: nil, address: "?", why: "malformed ZAP request")
            return reply(request.count > 1 ? request[1] : [], "500", "malformed request")
        }
        let id = request[1], address = String(decoding: request[3], as: UTF8.self)
        let mechanism = String(decoding: request[5], as: UTF8.self)
        guard mechanism == "CURVE", request.count >= 7, request[6].count == 32 else {
            refuse(key: nil, address: address, why: "mechanism \(mechanism.prefix(200).description.escapedForLog) instead of CURVE")
            return reply(id, "400", "CURVE required")
        }
        let key = request[6]
        try? reloadIfChanged(force: false)
        lock.lock()
        let name = allowed[key]
        if name != nil { counts.admitted += 1 }
        lock.unlock()
        guard let name else {
            refuse(key: CurveKey(bytes: key), address: address, why: "key not in \(directory)")
            return reply(id, "400", "key not authorised")
        }
        return reply(id, "200", "OK", user: name)
    }

    private func refuse(key: CurveKey?, address: String, why: String) {
        let text = "refused \(address.prefix(200).description.escapedForLog)\(key.map { " with key \($0.z85)" } ?? ""): \(why)"
        lock.lock(); counts.refusedKeys += 1; counts.lastRefusal = text; lock.unlock()
        note(text)
    }

    private func refuse(handshake failure: HandshakeFailure) {
        let text = "refused handshake: \(failure)"
        lock.lock(); counts.refusedHandshakes += 1; counts.lastRefusal = text; lock.unlock()
        note(text)
    }

    private func note(_ text: String) {
        let now = Date()
        lock.lock()
        if now.timeIntervalSince(logWindowStart) >= 60 {
            if suppressedInWindow > 0 { let n = suppressedInWindow; lock.unlock(); log("CURVE: \(n) more refusal(s) in the last minute"); lock.lock() }
            logWindowStart = now; logLinesInWindow = 0; suppressedInWindow = 0
        }
        let speak = logLinesInWindow < 10
        if speak { logLinesInWindow += 1 } else { suppressedInWindow += 1 }
        lock.unlock()
        if speak { log("CURVE: \(text)") }
    }

    /// Re-reads the allow-list when the directory changed (a key added or removed). A
    /// directory that cannot be read keeps the last list (and says so).
    private func reloadIfChanged(force: Bool) throws {
        var st = stat()
        guard stat(directory, &st) == 0 else {
            if force { throw CurveError.badKey(path: directory, why: String(cString: strerror(errno))) }
            return
        }
        lock.lock()
        let same = !force && directoryStamp.map { $0.tv_sec == st.st_mtim.tv_sec && $0.tv_nsec == st.st_mtim.tv_nsec } == true
        lock.unlock()
        if same { return }
        do {
            let keys = try CurveKeyFile.readDirectory(directory)
            var map: [[UInt8]: String] = [:]
            for (name, key) in keys { map[key.bytes] = name }
            lock.lock(); allowed = map; directoryStamp = st.st_mtim; lock.unlock()
            if !force { log("CURVE: allow-list re-read: \(keys.count) key(s) (\(keys.keys.sorted().joined(separator: ", ")))") }
        } catch {
            if force { throw error }
            lock.lock(); directoryStamp = st.st_mtim; lock.unlock()
            log("CURVE: \(error); keeping the previous allow-list")
        }
    }
}
