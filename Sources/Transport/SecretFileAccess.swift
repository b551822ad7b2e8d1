import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Who may read a secret key file, as a rule on its mode and owners, kept apart from the
/// file system so made-up files and processes can test it.
///
/// A secret is accepted when nobody but its owner can read it (0600, 0400), or, as
/// PostgreSQL accepts an ssl key, when root owns it, its group cannot write it, others
/// cannot read it and its group is one of this process's: that is what Kubernetes makes of
/// a Secret volume mounted with `defaultMode: 0440` in a pod with an `fsGroup` (root:fsGroup
/// 0440), the only way a non-root container can read one. A file under systemd's
/// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) is accepted as systemd protects it.
public enum SecretFileAccess {
    public struct File: Sendable {
        public var mode: UInt32
        public var owner: UInt32
        public var group: UInt32
        public var path: String
        public init(mode: UInt32, owner: UInt32, group: UInt32, path: String) {
            self.mode = mode & 0o7777; self.owner = owner; self.group = group; self.path = path
        }
        init(_ st: stat, path: String) {
            self.init(mode: UInt32(st.st_mode), owner: UInt32(st.st_uid), group: UInt32(st.st_gid), path: path)
        }
    }

    public struct Process: Sendable {
        public var user: UInt32
        public var groups: Set<UInt32>
        /// systemd's `$CREDENTIALS_DIRECTORY`, when set.
        public var credentialsDirectory: String?
        public init(user: UInt32, groups: Set<UInt32>, credentialsDirectory: String? = nil) {
            self.user = user; self.groups = groups; self.credentialsDirectory = credentialsDirectory
        }

        public static var current: Process {
            var groups: Set<UInt32> = [UInt32(getegid())]
            let n = getgroups(0, nil)
            if n > 0 {
                var list = [gid_t](repeating: 0, count: Int(n))
                let got = getgroups(n, &list)
                if got > 0 { for g in list.prefix(Int(got)) { groups.insert(UInt32(g)) } }
            }
            return Process(user: UInt32(geteuid()), groups: groups,
                           credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
        }
    }

    public static func acceptable(_ file: File, process: Process) -> Bool {
        if let dir = process.credentialsDirectory, !dir.isEmpty,
           file.path.hasPrefix(dir.hasSuffix("/") ? dir : dir + "/") { return true }
        if file.mode & 0o077 == 0 { return true }
        return file.owner == 0 && file.mode & 0o027 == 0 && process.groups.contains(file.group)
    }

    /// What to say when opening the file was refused.
    public static func permissionDenied(_ file: File, process: Process) -> String {
        "permission denied: owned by uid \(file.owner), group \(file.group), mode \(String(file.mode & 0o777, radix: 8)); "
            + "this process runs as uid \(process.user) with groups \(process.groups.sorted().map(String.init).joined(separator: ",")). "
            + "Make the file this user's (chown), or root's with the group of this process and mode 0440"
    }
}
