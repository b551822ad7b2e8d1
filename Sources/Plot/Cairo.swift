import CCairo

/// A cairo call that failed: which one, and cairo's own words for the status.
public struct CairoError: Error, CustomStringConvertible {
    public let call: String
    public let status: String
    public var description: String { "\(call) failed: \(status)" }
}

/// The one funnel for cairo's status codes (cairo records the first error on the surface
/// or context and ignores later drawing, so a check after drawing catches it all).
@inline(__always)
func check(_ call: String, _ status: cairo_status_t) throws {
    guard status != CAIRO_STATUS_SUCCESS else { return }
    throw CairoError(call: call, status: String(cString: cairo_status_to_string(status)))
}
