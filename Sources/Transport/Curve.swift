import CZeroMQ
import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A CurveZMQ key in Z85 text (40 characters for 32 bytes), as libzmq takes it.
public struct CurveKey: Sendable, Hashable, CustomStringConvertible {
    public let z85: String

    /// Checks that `text` is a Z85-encoded 32-byte key.
    public init?(z85 text: String) {
        guard text.utf8.count == 40, CurveKey.decode(text) != nil else { return nil }
        z85 = text
    }

    /// The key's 32 bytes (what a ZAP request carries as the CURVE credential).
    public var bytes: [UInt8] { CurveKey.decode(z85) ?? [] }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&out, bytes, 32) != nil else { return nil }
        z85 = CurveKey.text(out)
    }

    public var description: String { z85 }

    /// A NUL-terminated Z85 buffer from libzmq as text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        guard text.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        return text.withCString { zmq_z85_decode(&out, $0) } == nil ? nil : out
    }
}

/// A CURVE key pair: the public half is shared, the secret half never leaves its machine.
public struct CurveKeyPair: Sendable {
    public let publicKey: CurveKey
    public let secretKey: CurveKey

    /// Whether this libzmq was built with CURVE (Debian's is, through libsodium).
    public static var isAvailable: Bool { zmq_has("curve") != 0 }

    /// A fresh pair from libzmq's generator (libsodium's random source).
    public static func generate() throws -> CurveKeyPair {
        guard isAvailable else { throw CurveError.unavailable }
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        try zmqCheck(zmq_curve_keypair(&pub, &sec), "zmq_curve_keypair")
        guard let p = CurveKey(z85: CurveKey.text(pub)), let s = CurveKey(z85: CurveKey.text(sec)) else {
            throw CurveError.badKey(path: "zmq_curve_keypair", why: "libzmq returned a key that is not Z85")
        }
        return CurveKeyPair(publicKey: p, secretKey: s)
    }

    /// The pair of a secret key (the public half is derived from it).
    public init(secretKey: CurveKey) throws {
        guard CurveKeyPair.isAvailable else { throw CurveError.unavailable }
        var pub = [CChar](repeating: 0, count: 41)
        try zmqCheck(secretKey.z85.withCString { zmq_curve_public(&pub, $0) }, "zmq_curve_public")
        guard let p = CurveKey(z85: CurveKey.text(pub)) else { throw CurveError.badKey(path: "zmq_curve_public", why: "not Z85") }
        publicKey = p
        self.secretKey = secretKey
    }

    init(publicKey: CurveKey, secretKey: CurveKey) { self.publicKey = publicKey; self.secretKey = secretKey }
}

public enum CurveError: Error, CustomStringConvertible, Equatable {
    case unavailable
    case badKey(path: String, why: String)
    case exposedSecret(path: String, mode: UInt16)
    case unreadable(path: String, why: String)
    case noAuthorizedKeys(directory: String)
    case exists(path: String)

    public var description: String {
        switch self {
        case .unavailable:
            "this libzmq has no CURVE support (zmq_has(\"curve\") is false): install Debian's libzmq5, which is built with libsodium"
        case let .badKey(path, why):
            "\(path): not a CURVE key file (\(why)); make one with `svite keygen NAME --out DIR`"
        case let .exposedSecret(path, mode):
            "\(path): secret key readable by others (mode \(String(mode, radix: 8))); run `chmod 600 \(path)` "
                + "(a root-owned file may be group-readable, mode 0440, when its group is this process's: "
                + "a Kubernetes Secret volume with defaultMode 0440 and the pod's fsGroup)"
        case let .unreadable(path, why):
            "\(path): cannot read the key file: \(why)"
        case let .noAuthorizedKeys(directory):
            "\(directory): no public key files (*.key) to admit; copy each worker's NAME.key there"
        case let .exists(path):
            "\(path) exists; pass --force to replace it (workers holding the old key will be refused)"
        }
    }
}

/// Key files as text: `NAME.key` holds the public key, `NAME.key_secret` the secret one
/// (mode 0600), each as a line of Z85 after `#` comments. CZMQ's certificate files
/// (`public-key = "..."`, `secret-key = "..."`) are read as well.
public enum CurveKeyFile {
    public static let publicSuffix = ".key"
    public static let secretSuffix = ".key_secret"

    /// Writes NAME.key and NAME.key_secret into `directory`; returns their paths.
    @discardableResult
    public static func write(_ pair: CurveKeyPair, name: String, directory: String, force: Bool = false) throws -> (publicPath: String, secretPath: String) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pub = (directory as NSString).appendingPathComponent(name + publicSuffix)
        let sec = (directory as NSString).appendingPathComponent(name + secretSuffix)
        for p in [pub, sec] where !force && FileManager.default.fileExists(atPath: p) { throw CurveError.exists(path: p) }
        let stamp = ISO8601DateFormatter().string(from: Date())
        try writeFile(sec, mode: 0o600, text: "# svite CURVE secret key of \(name), made \(stamp). Keep it on its machine, mode 0600.\n\(pair.secretKey.z85)\n")
        try writeFile(pub, mode: 0o644, text: "# svite CURVE public key of \(name), made \(stamp). Copy it into the coordinator's --authorized-keys directory (a worker's) or give it to the workers as --coordinator-key (the coordinator's).\n\(pair.publicKey.z85)\n")
        return (pub, sec)
    }

    /// The file has `mode` from its creation (no moment in which a secret is readable).
    static func writeFile(_ path: String, mode: mode_t, text: String) throws {
        do { try AtomicFile.write(path, data: Data(text.utf8), mode: mode) } catch {
            throw CurveError.badKey(path: path, why: "cannot write: \(error)")
        }
    }

    /// Reads the key in a public or secret key file. A secret key file must not be
    /// readable by group or others.
    public static func read(_ path: String, secret: Bool) throws -> CurveKey {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            throw e == ENOENT ? CurveError.badKey(path: path, why: "no such file")
                : CurveError.unreadable(path: path, why: String(cString: strerror(e)))
        }
        if secret, !SecretFileAccess.acceptable(SecretFileAccess.File(st, path: path), process: .current) {
            throw CurveError.exposedSecret(path: path, mode: UInt16(st.st_mode & 0o777))
        }
        guard st.st_size < 64 << 10 else { throw CurveError.badKey(path: path, why: "larger than 64 KiB") }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let e = errno
            let why = e == EACCES ? SecretFileAccess.permissionDenied(SecretFileAccess.File(st, path: path), process: .current)
                : String(cString: strerror(e))
            throw CurveError.unreadable(path: path, why: why)
        }
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
        guard let key = parse(String(decoding: data, as: UTF8.self), secret: secret) else {
            throw CurveError.badKey(path: path, why: "no 40-character Z85 \(secret ? "secret" : "public") key in it")
        }
        return key
    }

    /// The key in a file's text: the first line that is one, or CZMQ's
    /// `public-key = "..."` / `secret-key = "..."`.
    static func parse(_ text: String, secret: Bool) -> CurveKey? {
        let czmqName = secret ? "secret-key" : "public-key"
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            // Z85's alphabet has '#' and '=' in it: a 40-character key line is a key first.
            if let key = CurveKey(z85: line) { return key }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.contains("=") {  // CZMQ: `public-key = "..."`; its other lines are skipped
                guard line.hasPrefix(czmqName), let q1 = line.firstIndex(of: "\""), let q2 = line.lastIndex(of: "\""), q1 < q2 else { continue }
                return CurveKey(z85: String(line[line.index(after: q1) ..< q2]))
            }
        }
        return nil
    }

    /// The public keys in every `*.key` file of `directory`, by file name.
    public static func readDirectory(_ directory: String) throws -> [String: CurveKey] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw CurveError.badKey(path: directory, why: "cannot list the directory: \(error.localizedDescription)")
        }
        var keys: [String: CurveKey] = [:]
        for n in names.sorted() where n.hasSuffix(publicSuffix) {
            keys[String(n.dropLast(publicSuffix.count))] = try read((directory as NSString).appendingPathComponent(n), secret: false)
        }
        return keys
    }
}

/// Who may talk to a CURVE server: the server's own secret key and the public keys it admits.
public struct CurveServerKeys: Sendable {
    public var secretKey: CurveKey
    /// The directory of admitted public keys; re-read when it changes, so a worker can be
    /// admitted (or struck off) without restarting the coordinator.
    public var authorizedDirectory: String
    public init(secretKey: CurveKey, authorizedDirectory: String) { self.secretKey = secretKey; self.authorizedDirectory = authorizedDirectory }

    /// Reads and checks both (the directory must hold at least one key).
    public static func load(secretKeyFile: String, authorizedDirectory: String) throws -> CurveServerKeys {
        let secret = try CurveKeyFile.read(secretKeyFile, secret: true)
        _ = try CurveKeyPair(secretKey: secret)
        if try CurveKeyFile.readDirectory(authorizedDirectory).isEmpty { throw CurveError.noAuthorizedKeys(directory: authorizedDirectory) }
        return CurveServerKeys(secretKey: secret, authorizedDirectory: authorizedDirectory)
    }
}

/// A CURVE client's keys: its own pair and the server's public key.
public struct CurveClientKeys: Sendable {
    public var pair: CurveKeyPair
    public var serverKey: CurveKey
    public init(pair: CurveKeyPair, serverKey: CurveKey) { self.pair = pair; self.serverKey = serverKey }

    public static func load(secretKeyFile: String, serverKeyFile: String) throws -> CurveClientKeys {
        let pair = try CurveKeyPair(secretKey: CurveKeyFile.read(secretKeyFile, secret: true))
        return CurveClientKeys(pair: pair, serverKey: try CurveKeyFile.read(serverKeyFile, secret: false))
    }
}

extension ZMQSocket {
    /// Makes this socket a CURVE server whose handshakes go to the ZAP handler of its
    /// context (call before bind).
    public func makeCurveServer(secretKey: CurveKey, zapDomain: String = "svite") throws {
        try set(ZMQ_CURVE_SERVER, 1, name: "CURVE_SERVER")
        try set(ZMQ_CURVE_SECRETKEY, bytes: Array(secretKey.z85.utf8), name: "CURVE_SECRETKEY")
        try set(ZMQ_ZAP_DOMAIN, bytes: Array(zapDomain.utf8), name: "ZAP_DOMAIN")
    }

    /// Makes this socket a CURVE client of the server with `keys.serverKey` (call before connect).
    public func makeCurveClient(_ keys: CurveClientKeys) throws {
        try set(ZMQ_CURVE_SERVERKEY, bytes: Array(keys.serverKey.z85.utf8), name: "CURVE_SERVERKEY")
        try set(ZMQ_CURVE_PUBLICKEY, bytes: Array(keys.pair.publicKey.z85.utf8), name: "CURVE_PUBLICKEY")
        try set(ZMQ_CURVE_SECRETKEY, bytes: Array(keys.pair.secretKey.z85.utf8), name: "CURVE_SECRETKEY")
    }

    /// Sends this socket's handshake failures (and, with `connections`, its completed
    /// handshakes and lost connections) to a PAIR socket at `endpoint` (inproc).
    public func monitorHandshakes(_ endpoint: String, connections: Bool = false) throws {
        var events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        if connections { events |= ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED }
        try zmqCheck(zmq_socket_monitor(handle, endpoint, Int32(events)), "zmq_socket_monitor(\(endpoint))")
    }
}
