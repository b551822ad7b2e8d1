import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Foundation's file errors as a person reads them: "permission denied" rather than
/// "The operation could not be completed. (NSCocoaErrorDomain error 513.)".
public enum FileErrorText {
    /// Whether `error` is one of Foundation's file or POSIX errors (not one of svite's own).
    public static func isFoundationFileError(_ error: Error) -> Bool {
        let domain = (error as NSError).domain
        return domain == NSCocoaErrorDomain || domain == NSPOSIXErrorDomain
    }

    /// "PATH: permission denied" when the error names its file, else the reason alone.
    public static func withPath(_ error: Error) -> String {
        let ns = error as NSError
        let path = ns.userInfo[NSFilePathErrorKey] as? String ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        return path.map { "\($0): \(describe(error))" } ?? describe(error)
    }

    public static func describe(_ error: Error) -> String {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))).lowercased() }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code))).lowercased()
        }
        if ns.domain == NSCocoaErrorDomain {
            switch CocoaError.Code(rawValue: ns.code) {
            case .fileWriteNoPermission, .fileReadNoPermission: return "permission denied"
            case .fileWriteOutOfSpace: return "no space left on device"
            case .fileWriteVolumeReadOnly: return "read-only file system"
            case .fileNoSuchFile, .fileReadNoSuchFile: return "no such file or directory"
            case .fileWriteFileExists: return "a file of that name exists"
            default: break
            }
        }
        return "\(error)"
    }
}
