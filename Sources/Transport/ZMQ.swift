import CZeroMQ
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failed libzmq call: the call, errno and zmq's text for it.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public var call: String
    public var code: Int32
    public var description: String { "\(call) failed: \(String(cString: zmq_strerror(code))) (errno \(code))" }
    public var isWouldBlock: Bool { code == EAGAIN }
    public var isUnreachable: Bool { code == EHOSTUNREACH }
}

/// The one funnel for libzmq return codes.
@discardableResult
func zmqCheck(_ rc: Int32, _ call: @autoclosure () -> String) throws -> Int32 {
    if rc < 0 { throw ZMQError(call: call(), code: zmq_errno()) }
    return rc
}

/// A ZeroMQ context (one per process is enough).
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var terminated = false

    public init(ioThreads: Int32 = 1) throws {
        guard let h = zmq_ctx_new() else { throw ZMQError(call: "zmq_ctx_new", code: zmq_errno()) }
        handle = h
        try zmqCheck(zmq_ctx_set(h, ZMQ_IO_THREADS, ioThreads), "zmq_ctx_set(IO_THREADS)")
    }

    /// Ends the context once every socket of it is closed: waits for their lingering
    /// frames, then stops ZeroMQ's threads. A process that exits with them still running
    /// (its context never released) can die in them on the way out.
    public func terminate() {
        lock.lock()
        let first = !terminated
        terminated = true
        lock.unlock()
        if first { zmq_ctx_term(handle) }
    }

    deinit { terminate() }
}

/// One ZeroMQ socket. A socket belongs to the thread that uses it: create, use and close
/// it on one thread (ZeroMQ sockets are not thread-safe).
public final class ZMQSocket: @unchecked Sendable {
    public enum Kind: Sendable {
        case router, dealer, rep, req
        /// One end of an in-process pipe between two threads (e.g. a wake-up signal).
        case pair
        var code: Int32 {
            switch self {
            case .pair: ZMQ_PAIR
            case .router: ZMQ_ROUTER
            case .dealer: ZMQ_DEALER
            case .rep: ZMQ_REP
            case .req: ZMQ_REQ
            }
        }
    }

    let handle: UnsafeMutableRawPointer
    public let kind: Kind
    let context: ZMQContext
    private var closed = false

    public init(_ context: ZMQContext, _ kind: Kind) throws {
        guard let h = zmq_socket(context.handle, kind.code) else {
            throw ZMQError(call: "zmq_socket(\(kind))", code: zmq_errno())
        }
        handle = h
        self.kind = kind
        self.context = context
        try set(ZMQ_LINGER, 0)
    }

    deinit { close() }

    public func close() {
        if !closed { zmq_close(handle); closed = true }
    }

    /// How long messages still queued at close are kept for delivery (0: dropped, the
    /// default here; the context's end waits at most this long).
    public func setLinger(milliseconds: Int32) throws { try set(ZMQ_LINGER, milliseconds, name: "LINGER") }

    public func set(_ option: Int32, _ value: Int32, name: String = "") throws {
        var v = value
        try zmqCheck(zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size), "zmq_setsockopt(\(name.isEmpty ? String(option) : name))")
    }

    public func set(_ option: Int32, int64 value: Int64, name: String = "") throws {
        var v = value
        try zmqCheck(zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size), "zmq_setsockopt(\(name.isEmpty ? String(option) : name))")
    }

    public func set(_ option: Int32, bytes: [UInt8], name: String = "") throws {
        try bytes.withUnsafeBytes {
            _ = try zmqCheck(zmq_setsockopt(handle, option, $0.baseAddress, $0.count), "zmq_setsockopt(\(name.isEmpty ? String(option) : name))")
        }
    }

    /// Binds and returns the endpoint actually bound (with the port a `*` resolved to).
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        try zmqCheck(zmq_bind(handle, endpoint), "zmq_bind(\(endpoint))")
        return try lastEndpoint()
    }

    public func connect(_ endpoint: String) throws {
        try zmqCheck(zmq_connect(handle, endpoint), "zmq_connect(\(endpoint))")
    }

    public func lastEndpoint() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        var size = buffer.count
        try zmqCheck(zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size), "zmq_getsockopt(LAST_ENDPOINT)")
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Sends a multipart message. Returns false if it would block (with `dontWait`).
    @discardableResult
    public func send(_ parts: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        for (i, part) in parts.enumerated() {
            var flags: Int32 = i < parts.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            let rc = part.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                let e = ZMQError(call: "zmq_send", code: zmq_errno())
                if e.isWouldBlock && i == 0 { return false }
                throw e
            }
        }
        return true
    }

    /// Receives one multipart message, or nil when none is waiting (`dontWait`).
    public func receive(dontWait: Bool = true) throws -> [[UInt8]]? {
        var parts: [[UInt8]] = []
        while true {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            let rc = zmq_msg_recv(&msg, handle, dontWait && parts.isEmpty ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let e = ZMQError(call: "zmq_msg_recv", code: zmq_errno())
                if e.isWouldBlock && parts.isEmpty { return nil }
                throw e
            }
            let size = zmq_msg_size(&msg)
            let data = zmq_msg_data(&msg)
            parts.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: data, count: size)))
            if zmq_msg_more(&msg) == 0 { return parts }
        }
    }

    // MARK: roles

    /// The coordinator's socket: a ROUTER that refuses to drop messages to unknown peers
    /// silently, lets a restarted worker take over its id, bounds message sizes, and
    /// keeps ZMTP heartbeats so dead TCP peers are noticed.
    public static func coordinatorRouter(_ context: ZMQContext, maxMessageBytes: Int64, heartbeatMs: Int32) throws -> ZMQSocket {
        let s = try ZMQSocket(context, .router)
        try s.set(ZMQ_ROUTER_MANDATORY, 1, name: "ROUTER_MANDATORY")
        try s.set(ZMQ_ROUTER_HANDOVER, 1, name: "ROUTER_HANDOVER")
        try s.set(ZMQ_MAXMSGSIZE, int64: maxMessageBytes, name: "MAXMSGSIZE")
        try s.heartbeats(heartbeatMs)
        try s.set(ZMQ_SNDHWM, 0, name: "SNDHWM")
        try s.set(ZMQ_RCVHWM, 0, name: "RCVHWM")
        return s
    }

    /// A worker's socket: a DEALER with a routing id the coordinator knows it by.
    public static func workerDealer(_ context: ZMQContext, identity: String, maxMessageBytes: Int64, heartbeatMs: Int32) throws -> ZMQSocket {
        let s = try ZMQSocket(context, .dealer)
        try s.set(ZMQ_ROUTING_ID, bytes: Array(identity.utf8), name: "ROUTING_ID")
        try s.set(ZMQ_MAXMSGSIZE, int64: maxMessageBytes, name: "MAXMSGSIZE")
        try s.heartbeats(heartbeatMs)
        try s.set(ZMQ_SNDHWM, 0, name: "SNDHWM")
        try s.set(ZMQ_RCVHWM, 0, name: "RCVHWM")
        return s
    }

    /// ZMTP pings every `ms`; a connection is closed when nothing arrives for a minute.
    /// libzmq counts only whole messages as an answer to a ping, so a bound of a few
    /// intervals closed connections that were carrying one big frame over a slow link
    /// (a 1.3 MB step frame takes 10 s at 1 Mbit/s) and the worker flapped. Whether a
    /// peer is gone is decided above the socket, by rules that know what is in flight
    /// (the coordinator's step deadlines and silence bound, the worker's rejoin bound).
    public static let connectionTimeoutMs: Int32 = 60_000

    func heartbeats(_ ms: Int32) throws {
        let timeout = max(3 * ms, Self.connectionTimeoutMs)
        try set(ZMQ_HEARTBEAT_IVL, ms, name: "HEARTBEAT_IVL")
        try set(ZMQ_HEARTBEAT_TIMEOUT, timeout, name: "HEARTBEAT_TIMEOUT")
        try set(ZMQ_HEARTBEAT_TTL, timeout, name: "HEARTBEAT_TTL")
    }
}

/// zmq_poll over a few sockets.
public enum Poller {
    /// Which sockets have a message waiting, after at most `timeoutMs` (−1 = forever).
    public static func readable(_ sockets: [ZMQSocket], timeoutMs: Int) throws -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        while true {
            let rc = zmq_poll(&items, Int32(items.count), timeoutMs)
            if rc < 0 && zmq_errno() == EINTR { continue }
            try zmqCheck(rc, "zmq_poll")
            return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
        }
    }
}
