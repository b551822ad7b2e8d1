import Foundation

/// A duration as a clock shows it: m:ss, or h:mm:ss from an hour; "--:--" when unknown.
/// The progress bar, `svite status` and the end-of-run lines all print it this way.
public func clockText(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "--:--" }
    let t = Int(seconds.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}
