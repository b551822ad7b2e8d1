extension String {
    /// The text with control and formatting characters (newlines, escapes, U+202E) written
    /// as \u{…}, so what a peer sends cannot forge log lines or reorder them on screen.
    public var escapedForLog: String {
        var out = ""
        for u in unicodeScalars {
            let c = u.properties.generalCategory
            if c == .control || c == .format { out += "\\u{\(String(u.value, radix: 16))}" } else { out.unicodeScalars.append(u) }
        }
        return out
    }
}
