import Foundation

/// A duration as a clock shows it: m:ss, or h:mm:ss from an hour; "--:--" when unknown.
/// The progress bar, `svite status` and the end-of-run lines all print it this way.
public func clockText(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "--:--" }
    let t = Int(seconds.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}

/// A moment in local time by strftime's `format` (the log's stamps, `svite status`'s
/// snapshots and a run's last record all print time this way).
public func localTimeText(_ unixSeconds: Double = Date().timeIntervalSince1970, format: String = "%Y-%m-%d %H:%M:%S") -> String {
    var t = time_t(unixSeconds)
    var parts = tm()
    localtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 64)
    let n = strftime(&buffer, buffer.count, format, &parts)
    return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
