import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a run directory cannot be trained in (another process holds it, it cannot be made).
public struct RunDirectoryError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// One training process per run directory: an exclusive flock on RUN/.lock (held until the
/// run returns, released by the kernel if the process dies) with the holder's pid inside
/// once it trains.
public final class RunDirectoryLock {
    private var fd: Int32

    /// Makes the directory if need be and takes its lock, or throws naming the holder.
    /// `recordingHolder` false leaves the file as it is until `recordHolder()`.
    public init(_ runDirectory: String, recordingHolder: Bool = true) throws {
        do {
            try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        } catch {
            throw RunDirectoryError(message: "cannot make the run directory \(runDirectory): \(FileErrorText.describe(error))")
        }
        let path = "\(runDirectory)/.lock"
        fd = open(path, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else { throw RunDirectoryError(message: "cannot open \(path): \(String(cString: strerror(errno)).lowercased())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buffer, 31, 0)
            let text = n > 0 ? String(decoding: buffer.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            close(fd)
            // The pid in the file is the holder's once it trains; before that it may be an
            // earlier run's, named only if that process lives.
            let holder = Int32(text).flatMap { kill($0, 0) == 0 || errno == EPERM ? " (pid \($0))" : nil } ?? ""
            throw RunDirectoryError(message: "another svite process\(holder) is training in \(runDirectory); stop it first, or use another --out")
        }
        if recordingHolder { recordHolder() }
    }

    /// Writes this process's pid into the lock file, for the message a second process gets.
    public func recordHolder() {
        guard fd >= 0 else { return }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    /// Whether a process trains in `runDirectory` now (holds its lock).
    public static func isHeld(_ runDirectory: String) -> Bool {
        let fd = open("\(runDirectory)/.lock", O_RDONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard flock(fd, LOCK_SH | LOCK_NB) == 0 else { return errno == EWOULDBLOCK }
        _ = flock(fd, LOCK_UN)
        return false
    }

    public func release() {
        guard fd >= 0 else { return }
        _ = flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
