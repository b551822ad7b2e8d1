import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An I/O failure that names the call, the path and errno's text.
public struct FileError: Error, CustomStringConvertible {
    public var call: String
    public var path: String
    public var code: Int32
    public var description: String { "\(call)(\(path)) failed: \(String(cString: strerror(code))) (errno \(code))" }
}

/// Writes a file so that a crash leaves either the old file or the complete new one:
/// the bytes go to a temporary file in the same directory, are fsynced, and the
/// temporary is renamed over the target (then the directory is fsynced).
public enum AtomicFile {
    /// `mode` is the file's from its creation (0600 for a secret: never readable by others).
    public static func write(_ path: String, mode: mode_t = 0o644, _ body: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileError(call: "open", path: tmp, code: errno) }
        var ok = false
        defer {
            if !ok { close(fd); unlink(tmp) }
        }
        try body { bytes in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileError(call: "write", path: tmp, code: errno)
                }
                done += n
            }
        }
        guard fsync(fd) == 0 else { throw FileError(call: "fsync", path: tmp, code: errno) }
        guard close(fd) == 0 else { ok = true; unlink(tmp); throw FileError(call: "close", path: tmp, code: errno) }
        ok = true
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw FileError(call: "rename", path: path, code: e)
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Deletes temporaries a killed writer left in `dir` (`.NAME.tmp-PID`); call it only
    /// while no other process writes there (e.g. under the run directory's lock).
    @discardableResult
    public static func removeLeftovers(in dir: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let stale = names.filter { $0.hasPrefix(".") && $0.range(of: ".tmp-") != nil }
        for name in stale { unlink("\(dir)/\(name)") }
        return stale
    }

    public static func write(_ path: String, data: Data, mode: mode_t = 0o644) throws {
        try write(path, mode: mode) { w in try data.withUnsafeBytes { try w($0) } }
    }
}
