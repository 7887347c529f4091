extension Int64 {
    /// `self + other`, or the nearest bound when the true sum does not fit: arithmetic on values
    /// read back from a ledger file never traps, whatever the file holds (an event recorded
    /// before the limits existed, a row written with plain SQL).
    @inlinable
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// `self - other`, or the nearest bound when the true difference does not fit.
    @inlinable
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : difference
    }
}
