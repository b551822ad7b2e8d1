import Foundation
import Testing
@testable import Transport
#if canImport(Glibc)
import Glibc
#endif

/// CURVE with an allow-list: keys on disk, the ZAP handler, and what gets through.
@Suite("curve", .serialized)
struct CurveTests {
    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("svite-curve-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func keyFilesRoundTripAndSecretsStayPrivate() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pair = try CurveKeyPair.generate()
        let paths = try CurveKeyFile.write(pair, name: "w1", directory: dir)
        #expect(paths.publicPath.hasSuffix("/w1.key") && paths.secretPath.hasSuffix("/w1.key_secret"))
        var st = stat()
        #expect(stat(paths.secretPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try CurveKeyFile.read(paths.publicPath, secret: false) == pair.publicKey)
        let secret = try CurveKeyFile.read(paths.secretPath, secret: true)
        #expect(secret == pair.secretKey)
        #expect(try CurveKeyPair(secretKey: secret).publicKey == pair.publicKey, "the public key is derived from the secret")
        // No silent overwrite; --force replaces.
        #expect(throws: CurveError.exists(path: paths.publicPath)) { try CurveKeyFile.write(pair, name: "w1", directory: dir) }
        let other = try CurveKeyPair.generate()
        try CurveKeyFile.write(other, name: "w1", directory: dir, force: true)
        #expect(try CurveKeyFile.read(paths.publicPath, secret: false) == other.publicKey)
        // A secret others can read is refused, with the fix in the message.
        chmod(paths.secretPath, 0o644)
        #expect(throws: CurveError.exposedSecret(path: paths.secretPath, mode: 0o644)) { try CurveKeyFile.read(paths.secretPath, secret: true) }
        // Not a key.
        let junk = "\(dir)/junk.key"
        _ = FileManager.default.createFile(atPath: junk, contents: Data("# nothing\nhello\n".utf8))
        #expect(throws: CurveError.self) { try CurveKeyFile.read(junk, secret: false) }
        #expect(throws: CurveError.self) { try CurveKeyFile.read("\(dir)/missing.key", secret: false) }
    }

    /// Who may read a secret, on made-up files and processes: the owner alone; root with
    /// this process's group and mode 0440 (Kubernetes' Secret volume with fsGroup); systemd's
    /// credentials directory; never others.
    @Test func secretFileAccessRule() {
        typealias A = SecretFileAccess
        let pod = A.Process(user: 65534, groups: [65534, 2000])
        func ok(_ mode: UInt32, owner: UInt32, group: UInt32, path: String = "/keys/k.key_secret", _ p: A.Process) -> Bool {
            A.acceptable(A.File(mode: mode, owner: owner, group: group, path: path), process: p)
        }
        #expect(ok(0o600, owner: 65534, group: 65534, pod))
        #expect(ok(0o400, owner: 65534, group: 65534, pod))
        #expect(ok(0o100440, owner: 0, group: 2000, pod), "k8s Secret with defaultMode 0440 and fsGroup 2000")
        #expect(ok(0o640, owner: 0, group: 2000, pod))
        #expect(!ok(0o440, owner: 0, group: 3000, pod), "root's group is not this process's")
        #expect(!ok(0o440, owner: 1000, group: 2000, pod), "group-readable and owned by another user")
        #expect(!ok(0o460, owner: 0, group: 2000, pod), "group-writable")
        #expect(!ok(0o444, owner: 0, group: 2000, pod), "readable by others")
        #expect(!ok(0o644, owner: 65534, group: 65534, pod))
        let systemd = A.Process(user: 61234, groups: [61234], credentialsDirectory: "/run/credentials/svite-worker@0.service")
        #expect(ok(0o440, owner: 0, group: 0, path: "/run/credentials/svite-worker@0.service/worker.key_secret", systemd))
        #expect(!ok(0o440, owner: 0, group: 0, path: "/run/credentials/svite-worker@0.service-other/k", systemd))
        let said = A.permissionDenied(A.File(mode: 0o400, owner: 0, group: 0, path: "/keys/k"), process: pod)
        #expect(said.hasPrefix("permission denied") && said.contains("uid 65534") && said.contains("mode 400"))
    }

    @Test func parsesBareKeysAndCZMQCertificates() throws {
        let pair = try CurveKeyPair.generate()
        #expect(CurveKeyFile.parse(pair.publicKey.z85 + "\n", secret: false) == pair.publicKey)
        let czmq = """
        #   ****  Generated on 2026-12-02 by CZMQ  ****
        metadata
            name = "w1"
        curve
            public-key = "\(pair.publicKey.z85)"
            secret-key = "\(pair.secretKey.z85)"
        """
        #expect(CurveKeyFile.parse(czmq, secret: false) == pair.publicKey)
        #expect(CurveKeyFile.parse(czmq, secret: true) == pair.secretKey)
        // Z85 has '=' in its alphabet: a key line with '=' in it is still a key, not a CZMQ line.
        var withEquals = try CurveKeyPair.generate().publicKey
        for _ in 0 ..< 200 where !withEquals.z85.contains("=") { withEquals = try CurveKeyPair.generate().publicKey }
        #expect(withEquals.z85.contains("="))
        #expect(CurveKeyFile.parse("# comment\n" + withEquals.z85, secret: false) == withEquals)
        #expect(CurveKeyFile.parse("short\n", secret: false) == nil)
    }

    @Test func endpointsOnLoopbackAreRecognised() {
        for e in ["tcp://127.0.0.1:5556", "tcp://127.0.0.1:*", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x", "inproc://a"] {
            #expect(Endpoint.isLoopback(e), "\(e)")
        }
        for e in ["tcp://*:5556", "tcp://0.0.0.0:5556", "tcp://10.0.0.2:1", "tcp://head-node:5555", "tcp://[::]:5"] {
            #expect(!Endpoint.isLoopback(e), "\(e)")
        }
    }

    /// Only listed keys get a message through; unlisted keys, plaintext clients and clients
    /// with the wrong server key get nothing, and each is counted. A key added to the
    /// directory is admitted at its next handshake without a restart.
    @Test func onlyListedKeysGetThrough() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try CurveKeyPair.generate(), listed = try CurveKeyPair.generate(), unlisted = try CurveKeyPair.generate()
        try FileManager.default.createDirectory(atPath: "\(dir)/auth", withIntermediateDirectories: true)
        try CurveKeyFile.write(listed, name: "listed", directory: "\(dir)/auth")
        let logged = LockedLines()
        let ctx = try ZMQContext()
        let guardian = try CurveGuard(ctx, keys: CurveServerKeys(secretKey: server.secretKey, authorizedDirectory: "\(dir)/auth")) { logged.append($0) }
        let router = try ZMQSocket.coordinatorRouter(ctx, maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try router.makeCurveServer(secretKey: server.secretKey)
        try guardian.watch(router, label: "test")
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        guardian.start()
        defer { router.close(); guardian.stop() }

        func client(_ name: String, keys: CurveClientKeys?) throws -> ZMQSocket {
            let s = try ZMQSocket.workerDealer(ctx, identity: name, maxMessageBytes: 1 << 20, heartbeatMs: 500)
            if let keys { try s.makeCurveClient(keys) }
            try s.connect(endpoint)
            try s.send([Array(name.utf8)])
            return s
        }
        /// The names whose messages reached the router within `seconds`.
        func arrivals(_ seconds: Double) throws -> Set<String> {
            var got: Set<String> = []
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if try Poller.readable([router], timeoutMs: 50)[0] {
                    while let m = try router.receive() { got.insert(String(decoding: m[0], as: UTF8.self)) }
                }
            }
            return got
        }
        let good = try client("good", keys: CurveClientKeys(pair: listed, serverKey: server.publicKey))
        let stranger = try client("stranger", keys: CurveClientKeys(pair: unlisted, serverKey: server.publicKey))
        let plain = try client("plain", keys: nil)
        let wrongServer = try client("wrong-server", keys: CurveClientKeys(pair: listed, serverKey: unlisted.publicKey))
        defer { [good, stranger, plain, wrongServer].forEach { $0.close() } }
        #expect(try arrivals(1.5) == ["good"])
        let counts = guardian.snapshot
        #expect(counts.admitted >= 1)
        #expect(counts.refusedKeys >= 1, "\(counts)")
        #expect(counts.refusedHandshakes >= 2, "plaintext and wrong server key: \(counts)")
        #expect(logged.lines.contains { $0.contains(unlisted.publicKey.z85) }, "the refused key is logged: \(logged.lines)")
        #expect(logged.lines.contains { $0.contains("without CURVE") }, "\(logged.lines)")

        // Admit the stranger by dropping its key into the directory: its next handshake
        // (a fresh connection) gets through.
        Thread.sleep(forTimeInterval: 0.01)  // a new mtime even on coarse clocks
        try CurveKeyFile.write(unlisted, name: "stranger", directory: "\(dir)/auth")
        let again = try client("stranger-again", keys: CurveClientKeys(pair: unlisted, serverKey: server.publicKey))
        defer { again.close() }
        #expect(try arrivals(1.5).contains("stranger-again"))
        #expect(guardian.allowedNames == ["listed", "stranger"])
    }

    /// A client refused by ZAP learns why from its own monitor (what the worker logs).
    @Test func refusedClientSeesAuthenticationFailure() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try CurveKeyPair.generate(), listed = try CurveKeyPair.generate(), unlisted = try CurveKeyPair.generate()
        try CurveKeyFile.write(listed, name: "listed", directory: dir)
        let ctx = try ZMQContext()
        let guardian = try CurveGuard(ctx, keys: CurveServerKeys(secretKey: server.secretKey, authorizedDirectory: dir)) { _ in }
        let router = try ZMQSocket.coordinatorRouter(ctx, maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try router.makeCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        guardian.start()
        defer { router.close(); guardian.stop() }
        let clientContext = try ZMQContext()
        let s = try ZMQSocket.workerDealer(clientContext, identity: "x", maxMessageBytes: 1 << 20, heartbeatMs: 500)
        try s.makeCurveClient(CurveClientKeys(pair: unlisted, serverKey: server.publicKey))
        let monitor = try HandshakeMonitor(clientContext, watching: s, label: "client")
        defer { monitor.close(); s.close() }
        try s.connect(endpoint)
        var failures: [HandshakeFailure] = []
        let deadline = Date().addingTimeInterval(3)
        while failures.isEmpty && Date() < deadline {
            _ = try Poller.readable([monitor.socket], timeoutMs: 50)
            failures += try monitor.drain()
        }
        #expect(failures.first?.kind == .authentication && failures.first?.value == 400, "\(failures)")
    }
}

final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ s: String) { lock.lock(); stored.append(s); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return stored }
}
