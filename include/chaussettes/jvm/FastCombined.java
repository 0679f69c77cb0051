package chaussettes.jvm;

import org.apache.spark.sql.api.java.UDF1;

/**
 * The detector's fast path (sparkparse.FAST_COMBINED) as a scanner: the 18 groups that the
 * regular expression captures from a typical Combined line, or null where it does not match.
 *
 * <p>The expression is anchored at both ends and its quantifiers never backtrack (possessive,
 * or followed by a character they cannot take), so one left-to-right pass decides it: each
 * step below is one element of the expression, in order. A group that does not take part
 * (query, referrer, user agent) is "", as regexp_replace writes it. tests/test_sparkparse.py
 * checks this against the expression on the test corpus and on mutated lines.
 *
 * <p>Why: the expression, evaluated by java.util.regex, plus the split of its result were
 * about a third of the detector's JVM time (profiled); with this pass instead, the fast path
 * takes less than half the time (bench/bench_parser.py).
 */
public final class FastCombined implements UDF1<String, String[]> {
    private static final long serialVersionUID = 1L;
    static final int GROUPS = 18;

    @Override
    public String[] call(String s) {
        return s == null ? null : parse(s);
    }

    static String[] parse(String s) {
        final int n = s.length();
        // (?!"?[0-9]{4}-[0-9]{2}-[0-9]{2}): what logformat reads as CSV
        int c = n > 0 && s.charAt(0) == '"' ? 1 : 0;
        if (digits(s, c, 4) && is(s, c + 4, '-') && digits(s, c + 5, 2) && is(s, c + 7, '-') && digits(s, c + 8, 2)) {
            return null;
        }
        String[] g = new String[GROUPS];
        // ([^ ]++) [^ ]++ [^ ]++ \[
        int i = 0;
        int e = runNotSpace(s, i);
        if (e == i || !is(s, e, ' ')) return null;
        g[0] = s.substring(i, e);
        for (int k = 0; k < 2; k++) {
            i = e + 1;
            e = runNotSpace(s, i);
            if (e == i || !is(s, e, ' ')) return null;
        }
        i = e + 1;
        if (!is(s, i, '[')) return null;
        i++;
        // (\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\] "
        if (i + 29 > n) return null;
        if (!(digits(s, i, 2) && s.charAt(i + 2) == '/' && upper(s.charAt(i + 3)) && lower(s.charAt(i + 4))
                && lower(s.charAt(i + 5)) && s.charAt(i + 6) == '/' && digits(s, i + 7, 4) && s.charAt(i + 11) == ':'
                && digits(s, i + 12, 2) && s.charAt(i + 14) == ':' && digits(s, i + 15, 2) && s.charAt(i + 17) == ':'
                && digits(s, i + 18, 2) && s.charAt(i + 20) == ' ' && (s.charAt(i + 21) == '+' || s.charAt(i + 21) == '-')
                && digits(s, i + 22, 4) && s.charAt(i + 26) == ']' && s.charAt(i + 27) == ' ' && s.charAt(i + 28) == '"')) {
            return null;
        }
        g[1] = s.substring(i, i + 2);
        g[2] = s.substring(i + 3, i + 6);
        g[3] = s.substring(i + 7, i + 11);
        g[4] = s.substring(i + 12, i + 14);
        g[5] = s.substring(i + 15, i + 17);
        g[6] = s.substring(i + 18, i + 20);
        g[7] = s.substring(i + 21, i + 22);
        g[8] = s.substring(i + 22, i + 24);
        g[9] = s.substring(i + 24, i + 26);
        i += 29;
        // ([A-Za-z][A-Za-z0-9_-]*+) : the method, then a space
        if (i >= n || !letter(s.charAt(i))) return null;
        e = i + 1;
        while (e < n && methodChar(s.charAt(e))) e++;
        if (!is(s, e, ' ')) return null;
        g[10] = s.substring(i, e);
        // ([^ "\\?]++) : the path
        i = e + 1;
        e = i;
        while (e < n && pathChar(s.charAt(e))) e++;
        if (e == i) return null;
        g[11] = s.substring(i, e);
        // (\?[^ "\\]*+)? : the query, '?' included
        i = e;
        if (is(s, i, '?')) {
            e = i + 1;
            while (e < n && queryChar(s.charAt(e))) e++;
            g[12] = s.substring(i, e);
            i = e;
        } else {
            g[12] = "";
        }
        // ' ' ([A-Z][A-Z0-9]*+/\d++(?:\.\d++)?) '" '
        if (!is(s, i, ' ')) return null;
        i++;
        if (i >= n || !upper(s.charAt(i))) return null;
        e = i + 1;
        while (e < n && (upper(s.charAt(e)) || digit(s.charAt(e)))) e++;
        if (!is(s, e, '/')) return null;
        e = runDigits(s, e + 1);
        if (e < 0) return null;
        if (is(s, e, '.')) {
            e = runDigits(s, e + 1);
            if (e < 0) return null;
        }
        if (!is(s, e, '"') || !is(s, e + 1, ' ')) return null;
        g[13] = s.substring(i, e);
        // ([1-5]\d\d) ' '
        i = e + 2;
        if (i + 4 > n || s.charAt(i) < '1' || s.charAt(i) > '5' || !digits(s, i + 1, 2) || s.charAt(i + 3) != ' ') {
            return null;
        }
        g[14] = s.substring(i, i + 3);
        // (\d{1,18}|-)
        i += 4;
        if (is(s, i, '-')) {
            e = i + 1;
        } else {
            e = runDigits(s, i);
            if (e < 0 || e - i > 18) return null;
        }
        g[15] = s.substring(i, e);
        // (?: "([^"\\]*+)" "([^"\\]*+)"(?: [\s\S]*)?)?\z
        i = e;
        g[16] = "";
        g[17] = "";
        if (i == n) return g;
        if (!is(s, i, ' ') || !is(s, i + 1, '"')) return null;
        i += 2;
        e = i;
        while (e < n && quotedChar(s.charAt(e))) e++;
        if (!is(s, e, '"') || !is(s, e + 1, ' ') || !is(s, e + 2, '"')) return null;
        g[16] = s.substring(i, e);
        i = e + 3;
        e = i;
        while (e < n && quotedChar(s.charAt(e))) e++;
        if (!is(s, e, '"')) return null;
        g[17] = s.substring(i, e);
        e++;
        return e == n || s.charAt(e) == ' ' ? g : null;
    }

    private static boolean is(String s, int i, char ch) {
        return i < s.length() && s.charAt(i) == ch;
    }

    private static boolean digit(char ch) {
        return ch >= '0' && ch <= '9';
    }

    private static boolean upper(char ch) {
        return ch >= 'A' && ch <= 'Z';
    }

    private static boolean lower(char ch) {
        return ch >= 'a' && ch <= 'z';
    }

    private static boolean letter(char ch) {
        return upper(ch) || lower(ch);
    }

    private static boolean methodChar(char ch) {
        return letter(ch) || digit(ch) || ch == '_' || ch == '-';
    }

    private static boolean pathChar(char ch) {
        return ch != ' ' && ch != '"' && ch != '\\' && ch != '?';
    }

    private static boolean queryChar(char ch) {
        return ch != ' ' && ch != '"' && ch != '\\';
    }

    private static boolean quotedChar(char ch) {
        return ch != '"' && ch != '\\';
    }

    /** Whether s has {@code count} ASCII digits from {@code i}. */
    private static boolean digits(String s, int i, int count) {
        if (i + count > s.length()) return false;
        for (int k = i; k < i + count; k++) {
            if (!digit(s.charAt(k))) return false;
        }
        return true;
    }

    /** The end of the run of non-space characters from {@code i}. */
    private static int runNotSpace(String s, int i) {
        while (i < s.length() && s.charAt(i) != ' ') i++;
        return i;
    }

    /** The end of a run of one or more digits from {@code i}, or -1. */
    private static int runDigits(String s, int i) {
        int e = i;
        while (e < s.length() && digit(s.charAt(e))) e++;
        return e == i ? -1 : e;
    }
}
