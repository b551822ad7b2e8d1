import Core
import Foundation
import Transport

/// `svite bench comm --sockets`: what the ZeroMQ connection itself costs, plaintext against
/// CURVE. A worker-shaped DEALER and a coordinator-shaped ROUTER on loopback, each with its
/// own context (so each side has its own I/O thread, as two processes would), exchange
/// frames of a step's size: a one-way stream (throughput of one connection) and a
/// request/reply loop (the time a step's push and reply spend on the socket).
public struct SocketBenchmark {
    public enum Security: String, Codable, Sendable { case plain, curve }

    public struct Options: Sendable {
        public var frameBytes: Int
        public var label: String
        public var security: Security = .plain
        /// Frames in the one-way stream (and half as many round trips).
        public var frames = 200
        public init(frameBytes: Int, label: String) { self.frameBytes = frameBytes; self.label = label }
    }

    public struct Result: Codable, Sendable {
        public var label: String
        public var security: Security
        public var frameBytes: Int
        public var frames: Int
        public var streamMBPerSecond: Double
        public var roundTripMs: Double
        public var machine: MachineInfo
    }

    public let options: Options
    public init(_ options: Options) { self.options = options }

    public func run() throws -> Result {
        let o = options
        let serverContext = try ZMQContext()
        let clientContext = try ZMQContext()
        let keyDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("svite-bench-keys-\(getpid())-\(UInt64.random(in: 0 ... .max))").path
        var curveGuard: CurveGuard?
        defer {
            curveGuard?.stop()
            try? FileManager.default.removeItem(atPath: keyDirectory)
        }

        let maxBytes = Int64(o.frameBytes + 4096)
        let router = try ZMQSocket.coordinatorRouter(serverContext, maxMessageBytes: maxBytes, heartbeatMs: 1000)
        let dealer = try ZMQSocket.workerDealer(clientContext, identity: "bench", maxMessageBytes: maxBytes, heartbeatMs: 1000)
        defer { dealer.close(); router.close() }
        if o.security == .curve {
            let server = try CurveKeyPair.generate(), client = try CurveKeyPair.generate()
            try FileManager.default.createDirectory(atPath: keyDirectory, withIntermediateDirectories: true)
            _ = try CurveKeyFile.write(client, name: "bench", directory: keyDirectory)
            let g = try CurveGuard(serverContext, keys: CurveServerKeys(secretKey: server.secretKey, authorizedDirectory: keyDirectory)) { _ in }
            curveGuard = g
            try router.makeCurveServer(secretKey: server.secretKey)
            g.start()
            try dealer.makeCurveClient(CurveClientKeys(pair: client, serverKey: server.publicKey))
        }
        let endpoint = try router.bind("tcp://127.0.0.1:0")
        try dealer.connect(endpoint)

        var rng = Xoshiro256(seed: 7)
        let frame = (0 ..< o.frameBytes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // The handshake, then a warm-up round trip so neither timing includes it.
        try dealer.send([[1]])
        guard let hello = try receive(router, timeoutMs: 10_000) else { throw BenchError.timeout("the handshake (\(o.security))") }
        let peer = hello[0]
        try router.send([peer, [1]])
        guard try receive(dealer, timeoutMs: 10_000) != nil else { throw BenchError.timeout("the first reply") }

        // One-way stream: the dealer sends on its own thread while this one receives.
        let sent = DispatchSemaphore(value: 0)
        let sender = Thread { for _ in 0 ..< o.frames { _ = try? dealer.send([frame]) }; sent.signal() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        sender.start()
        for _ in 0 ..< o.frames {
            guard let m = try receive(router, timeoutMs: 30_000), m.count == 2, m[1].count == o.frameBytes else { throw BenchError.timeout("the stream") }
        }
        let stream = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        sent.wait()  // the dealer is the sender thread's until its last send returns

        // Request and reply, frame-sized both ways (a push and its parameters).
        let trips = max(o.frames / 2, 3)
        let t1 = DispatchTime.now().uptimeNanoseconds
        for _ in 0 ..< trips {
            try dealer.send([frame])
            guard let m = try receive(router, timeoutMs: 30_000) else { throw BenchError.timeout("a request") }
            try router.send([m[0], frame])
            guard try receive(dealer, timeoutMs: 30_000) != nil else { throw BenchError.timeout("a reply") }
        }
        let trip = Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9
        return Result(label: o.label, security: o.security, frameBytes: o.frameBytes, frames: o.frames,
                      streamMBPerSecond: Double(o.frames * o.frameBytes) / stream / 1e6,
                      roundTripMs: 1000 * trip / Double(trips), machine: .current())
    }

    private func receive(_ socket: ZMQSocket, timeoutMs: Int) throws -> [[UInt8]]? {
        guard try Poller.readable([socket], timeoutMs: timeoutMs)[0] else { return nil }
        return try socket.receive(dontWait: true)
    }

    public static func table(_ rows: [Result]) -> String {
        var s = "frames of     size       security  one-way MB/s  round trip ms  (loopback, one connection)\n"
        for r in rows {
            s += r.label.padding(toLength: 12, withPad: " ", startingAt: 0)
                + String(format: " %7.2f MB  %-8@  %12.0f  %13.2f\n", Double(r.frameBytes) / 1e6, r.security.rawValue as NSString, r.streamMBPerSecond, r.roundTripMs)
        }
        for label in Set(rows.map(\.label)).sorted() {
            if let p = rows.first(where: { $0.label == label && $0.security == .plain }), let c = rows.first(where: { $0.label == label && $0.security == .curve }) {
                s += String(format: "%@: CURVE runs at %.2f× plaintext's throughput; a round trip takes %.2f× as long\n", label as NSString, c.streamMBPerSecond / p.streamMBPerSecond, c.roundTripMs / p.roundTripMs)
            }
        }
        if let m = rows.first?.machine { s += "machine: \(m.summary)" }
        return s
    }
}

public enum BenchError: Error, CustomStringConvertible {
    case timeout(String)
    public var description: String {
        switch self {
        case .timeout(let what): "bench comm --sockets: no message within the time limit during \(what) on loopback"
        }
    }
}
