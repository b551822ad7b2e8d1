import CZlib

/// CRC-32 (zlib's) over bytes: frames on the wire and checkpoints on disk.
public enum Checksum {
    public static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 { crc32(continuing: 0, bytes) }

    /// The CRC of what `previous` covered followed by `bytes`.
    public static func crc32(continuing previous: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return previous }
        var crc = UInt(previous)
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, Int(UInt32.max >> 1))
            crc = CZlib.crc32(crc, base.assumingMemoryBound(to: UInt8.self) + offset, UInt32(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    public static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0) }
    }
}
