//! Decoder tests against byte strings produced by a real PostgreSQL 15 server.
//!
//! Each `PG_ROWS` entry is `(type, literal, <typsend>(literal) as hex, <typoutput>(literal),
//! extra)`, where `extra` is PostgreSQL's own computation of the expected Arrow value for
//! temporal types (days / microseconds since 1970, or `months,days,micros`).
//!
//! To regenerate: start a throwaway PostgreSQL 15 (`initdb -A trust`, `pg_ctl start`),
//! run the SQL below with `psql -Atq`, listing the (n, type, literal) cases in the VALUES
//! clause (the literal is the second column of each row here), and paste the output.
//!
//! ```sql
//! DROP TYPE IF EXISTS mood CASCADE; CREATE TYPE mood AS ENUM ('sad','ok','happy ☺');
//! DROP DOMAIN IF EXISTS posint; CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
//! CREATE OR REPLACE FUNCTION s(ty text, li text) RETURNS TABLE(typ text, lit text, hex text, txt text) LANGUAGE plpgsql AS $$
//! DECLARE fs text; fo text; h text; t text;
//! BEGIN
//!   SELECT typsend::text, typoutput::text INTO fs, fo FROM pg_type WHERE oid = ty::regtype;
//!   EXECUTE format('SELECT encode(%s(%s::%s),''hex''), %s(%s::%s)::text', fs, quote_literal(li), ty, fo, quote_literal(li), ty) INTO h, t;
//!   RETURN QUERY SELECT ty, li, h, t;
//! END $$;
//! SET TimeZone = 'Europe/Amsterdam';
//! CREATE OR REPLACE FUNCTION x(ty text, li text) RETURNS text LANGUAGE plpgsql AS $$
//! DECLARE r text; base text := regexp_replace(ty, '\(.*\)', '');
//! BEGIN
//!   IF base = 'date' THEN
//!     EXECUTE format('SELECT CASE WHEN isfinite(v) THEN (v - ''1970-01-01''::date)::text ELSE v::text END FROM (SELECT %L::date v) s', li) INTO r;
//!   ELSIF base IN ('timestamp', 'timestamptz') THEN
//!     EXECUTE format('SELECT CASE WHEN isfinite(v) THEN trunc(extract(epoch from v)*1000000)::text ELSE v::text END FROM (SELECT %L::%s v) s', li, base) INTO r;
//!   ELSIF base = 'time' THEN
//!     EXECUTE format('SELECT trunc(extract(epoch from %L::time)*1000000)::text', li) INTO r;
//!   ELSIF base = 'interval' THEN
//!     EXECUTE format('SELECT (extract(year from v)*12+extract(month from v))::text||'',''||extract(day from v)::text||'',''||((extract(hour from v)*3600+extract(minute from v)*60)*1000000+extract(microseconds from v))::text FROM (SELECT %L::interval v) s', li) INTO r;
//!   ELSE r := '';
//!   END IF;
//!   RETURN r;
//! END $$;
//! CREATE OR REPLACE FUNCTION q(t text) RETURNS text LANGUAGE sql AS $$ SELECT 'r##"' || t || '"##' $$;
//! SELECT format('    (%s, %s, %s, %s, %s),', q(c.ty), q(left(c.li, 80)), q(r.hex), q(r.txt), q(x(c.ty, c.li)))
//! FROM (VALUES (1,'bool','true'), ...) c(n, ty, li), LATERAL s(c.ty, c.li) r ORDER BY c.n;
//! ```

#[rustfmt::skip]
const PG_ROWS: &[(&str, &str, &str, &str, &str)] = &[
    (r##"bool"##, r##"true"##, r##"01"##, r##"t"##, r##""##),
    (r##"bool"##, r##"false"##, r##"00"##, r##"f"##, r##""##),
    (r##"int2"##, r##"0"##, r##"0000"##, r##"0"##, r##""##),
    (r##"int2"##, r##"-32768"##, r##"8000"##, r##"-32768"##, r##""##),
    (r##"int2"##, r##"32767"##, r##"7fff"##, r##"32767"##, r##""##),
    (r##"int4"##, r##"-2147483648"##, r##"80000000"##, r##"-2147483648"##, r##""##),
    (r##"int4"##, r##"2147483647"##, r##"7fffffff"##, r##"2147483647"##, r##""##),
    (r##"int8"##, r##"-9223372036854775808"##, r##"8000000000000000"##, r##"-9223372036854775808"##, r##""##),
    (r##"int8"##, r##"9223372036854775807"##, r##"7fffffffffffffff"##, r##"9223372036854775807"##, r##""##),
    (r##"oid"##, r##"0"##, r##"00000000"##, r##"0"##, r##""##),
    (r##"oid"##, r##"4294967295"##, r##"ffffffff"##, r##"4294967295"##, r##""##),
    (r##"float4"##, r##"1.5"##, r##"3fc00000"##, r##"1.5"##, r##""##),
    (r##"float4"##, r##"NaN"##, r##"7fc00000"##, r##"NaN"##, r##""##),
    (r##"float4"##, r##"Infinity"##, r##"7f800000"##, r##"Infinity"##, r##""##),
    (r##"float4"##, r##"-Infinity"##, r##"ff800000"##, r##"-Infinity"##, r##""##),
    (r##"float4"##, r##"-0"##, r##"80000000"##, r##"-0"##, r##""##),
    (r##"float4"##, r##"3.4028235e38"##, r##"7f7fffff"##, r##"3.4028235e+38"##, r##""##),
    (r##"float4"##, r##"1e-45"##, r##"00000001"##, r##"1e-45"##, r##""##),
    (r##"float8"##, r##"0.1"##, r##"3fb999999999999a"##, r##"0.1"##, r##""##),
    (r##"float8"##, r##"NaN"##, r##"7ff8000000000000"##, r##"NaN"##, r##""##),
    (r##"float8"##, r##"Infinity"##, r##"7ff0000000000000"##, r##"Infinity"##, r##""##),
    (r##"float8"##, r##"-Infinity"##, r##"fff0000000000000"##, r##"-Infinity"##, r##""##),
    (r##"float8"##, r##"-0"##, r##"8000000000000000"##, r##"-0"##, r##""##),
    (r##"float8"##, r##"1.7976931348623157e308"##, r##"7fefffffffffffff"##, r##"1.7976931348623157e+308"##, r##""##),
    (r##"float8"##, r##"5e-324"##, r##"0000000000000001"##, r##"5e-324"##, r##""##),
    (r##"numeric"##, r##"0"##, r##"0000000000000000"##, r##"0"##, r##""##),
    (r##"numeric"##, r##"-0"##, r##"0000000000000000"##, r##"0"##, r##""##),
    (r##"numeric"##, r##"-0.00"##, r##"0000000000000002"##, r##"0.00"##, r##""##),
    (r##"numeric"##, r##"0.000001"##, r##"0001fffe000000060064"##, r##"0.000001"##, r##""##),
    (r##"numeric"##, r##"12345678901234567890.123456789"##, r##"000800040000000904d2162e23340d801ed204d2162e2328"##, r##"12345678901234567890.123456789"##, r##""##),
    (r##"numeric"##, r##"NaN"##, r##"00000000c0000000"##, r##"NaN"##, r##""##),
    (r##"numeric"##, r##"Infinity"##, r##"00000000d0000020"##, r##"Infinity"##, r##""##),
    (r##"numeric"##, r##"-Infinity"##, r##"00000000f0000020"##, r##"-Infinity"##, r##""##),
    (r##"numeric"##, r##"99999999999999999999999999999999999999999999999999999999999999999999999999999999"##, r##"00fa009500000190270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045704570457045d"##, r##"999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999.1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111117"##, r##""##),
    (r##"numeric"##, r##"1e-10"##, r##"0001fffd0000000a0064"##, r##"0.0000000001"##, r##""##),
    (r##"numeric"##, r##"1e100"##, r##"00010019000000000001"##, r##"10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"##, r##""##),
    (r##"numeric"##, r##"-123.4500"##, r##"0002000040000004007b1194"##, r##"-123.4500"##, r##""##),
    (r##"numeric"##, r##"10000"##, r##"00010001000000000001"##, r##"10000"##, r##""##),
    (r##"numeric"##, r##"0.1"##, r##"0001ffff0000000103e8"##, r##"0.1"##, r##""##),
    (r##"numeric(38,9)"##, r##"12345678901234567890.123456789"##, r##"000800040000000904d2162e23340d801ed204d2162e2328"##, r##"12345678901234567890.123456789"##, r##""##),
    (r##"numeric(38,9)"##, r##"-0.000000001"##, r##"0001fffd4000000903e8"##, r##"-0.000000001"##, r##""##),
    (r##"numeric(38,9)"##, r##"0"##, r##"0000000000000009"##, r##"0.000000000"##, r##""##),
    (r##"numeric(38,9)"##, r##"99999999999999999999999999999.999999999"##, r##"000b0007000000090009270f270f270f270f270f270f270f270f270f2328"##, r##"99999999999999999999999999999.999999999"##, r##""##),
    (r##"numeric(38,9)"##, r##"-99999999999999999999999999999.999999999"##, r##"000b0007400000090009270f270f270f270f270f270f270f270f270f2328"##, r##"-99999999999999999999999999999.999999999"##, r##""##),
    (r##"numeric(76,20)"##, r##"12345678901234567890123456789012345678901234567890123456.12345678901234567890"##, r##"0013000d0000001404d2162e23340d801ed204d2162e23340d801ed204d2162e23340d8004d2162e23340d801ed2"##, r##"12345678901234567890123456789012345678901234567890123456.12345678901234567890"##, r##""##),
    (r##"numeric(76,20)"##, r##"-99999999999999999999999999999999999999999999999999999999.99999999999999999999"##, r##"0013000d40000014270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f270f"##, r##"-99999999999999999999999999999999999999999999999999999999.99999999999999999999"##, r##""##),
    (r##"numeric(76,20)"##, r##"0.00000000000000000001"##, r##"0001fffb000000140001"##, r##"0.00000000000000000001"##, r##""##),
    (r##"numeric(10,2)"##, r##"-0.00"##, r##"0000000000000002"##, r##"0.00"##, r##""##),
    (r##"numeric(10,2)"##, r##"12.3"##, r##"0002000000000002000c0bb8"##, r##"12.30"##, r##""##),
    (r##"numeric(5,-2)"##, r##"12345"##, r##"0002000100000000000108fc"##, r##"12300"##, r##""##),
    (r##"numeric(3,5)"##, r##"0.00123"##, r##"0002ffff00000005000c0bb8"##, r##"0.00123"##, r##""##),
    (r##"numeric(100,10)"##, r##"1.5"##, r##"000200000000000a00011388"##, r##"1.5000000000"##, r##""##),
    (r##"numeric(10,2)"##, r##"NaN"##, r##"00000000c0000000"##, r##"NaN"##, r##""##),
    (r##"money"##, r##"1234.56"##, r##"000000000001e240"##, r##"$1,234.56"##, r##""##),
    (r##"money"##, r##"-0.01"##, r##"ffffffffffffffff"##, r##"-$0.01"##, r##""##),
    (r##"money"##, r##"92233720368547758.07"##, r##"7fffffffffffffff"##, r##"$92,233,720,368,547,758.07"##, r##""##),
    (r##"money"##, r##"-92233720368547758.08"##, r##"8000000000000000"##, r##"-$92,233,720,368,547,758.08"##, r##""##),
    (r##"text"##, r##""##, r##""##, r##""##, r##""##),
    (r##"text"##, r##"héllo wörld ☺ 𝄞"##, r##"68c3a96c6c6f2077c3b6726c6420e298ba20f09d849e"##, r##"héllo wörld ☺ 𝄞"##, r##""##),
    (r##"text"##, r##"tab	here "q" \ back"##, r##"746162096865726520227122205c206261636b"##, r##"tab	here "q" \ back"##, r##""##),
    (r##"varchar(5)"##, r##"abc"##, r##"616263"##, r##"abc"##, r##""##),
    (r##"bpchar(5)"##, r##"ab"##, r##"6162202020"##, r##"ab   "##, r##""##),
    (r##"name"##, r##"pg_class"##, r##"70675f636c617373"##, r##"pg_class"##, r##""##),
    (r##""char""##, r##"a"##, r##"61"##, r##"a"##, r##""##),
    (r##"json"##, r##"{"a": [1, 2]}"##, r##"7b2261223a205b312c20325d7d"##, r##"{"a": [1, 2]}"##, r##""##),
    (r##"jsonb"##, r##"{"b": 1, "a": [1, "x", null]}"##, r##"017b2261223a205b312c202278222c206e756c6c5d2c202262223a20317d"##, r##"{"a": [1, "x", null], "b": 1}"##, r##""##),
    (r##"xml"##, r##"<a>1</a>"##, r##"3c613e313c2f613e"##, r##"<a>1</a>"##, r##""##),
    (r##"bytea"##, r##"\x"##, r##""##, r##"\x"##, r##""##),
    (r##"bytea"##, r##"\x00ff10"##, r##"00ff10"##, r##"\x00ff10"##, r##""##),
    (r##"bytea"##, r##"a\\b"##, r##"615c62"##, r##"\x615c62"##, r##""##),
    (r##"date"##, r##"2024-01-31"##, r##"0000225c"##, r##"2024-01-31"##, r##"19753"##),
    (r##"date"##, r##"1970-01-01"##, r##"ffffd533"##, r##"1970-01-01"##, r##"0"##),
    (r##"date"##, r##"1900-01-01"##, r##"ffff7154"##, r##"1900-01-01"##, r##"-25567"##),
    (r##"date"##, r##"0001-01-01"##, r##"fff4dbf9"##, r##"0001-01-01"##, r##"-719162"##),
    (r##"date"##, r##"0044-03-15 BC"##, r##"fff49d7b"##, r##"0044-03-15 BC"##, r##"-735160"##),
    (r##"date"##, r##"4714-11-24 BC"##, r##"ffda97a7"##, r##"4714-11-24 BC"##, r##"-2440588"##),
    (r##"date"##, r##"2100-06-01"##, r##"00008f44"##, r##"2100-06-01"##, r##"47633"##),
    (r##"date"##, r##"5874897-12-31"##, r##"7fda970c"##, r##"5874897-12-31"##, r##"2145042905"##),
    (r##"date"##, r##"infinity"##, r##"7fffffff"##, r##"infinity"##, r##"infinity"##),
    (r##"date"##, r##"-infinity"##, r##"80000000"##, r##"-infinity"##, r##"-infinity"##),
    (r##"date"##, r##"1969-12-31"##, r##"ffffd532"##, r##"1969-12-31"##, r##"-1"##),
    (r##"date"##, r##"2000-02-29"##, r##"0000003b"##, r##"2000-02-29"##, r##"11016"##),
    (r##"time"##, r##"00:00:00"##, r##"0000000000000000"##, r##"00:00:00"##, r##"0"##),
    (r##"time"##, r##"12:34:56.789"##, r##"0000000a8be62608"##, r##"12:34:56.789"##, r##"45296789000"##),
    (r##"time"##, r##"23:59:59.999999"##, r##"000000141dd75fff"##, r##"23:59:59.999999"##, r##"86399999999"##),
    (r##"time"##, r##"24:00:00"##, r##"000000141dd76000"##, r##"24:00:00"##, r##"86400000000"##),
    (r##"timetz"##, r##"12:34:56.5+05:30"##, r##"0000000a8be1bd20ffffb2a8"##, r##"12:34:56.5+05:30"##, r##""##),
    (r##"timetz"##, r##"00:00:00+00"##, r##"000000000000000000000000"##, r##"00:00:00+00"##, r##""##),
    (r##"timetz"##, r##"23:59:59.999999-03:30:15"##, r##"000000141dd75fff00003147"##, r##"23:59:59.999999-03:30:15"##, r##""##),
    (r##"timetz"##, r##"01:02:03-08"##, r##"00000000dde878c000007080"##, r##"01:02:03-08"##, r##""##),
    (r##"timestamp"##, r##"2024-01-31 12:34:56.789"##, r##"0002b33be00ca608"##, r##"2024-01-31 12:34:56.789"##, r##"1706704496789000"##),
    (r##"timestamp"##, r##"1900-01-01 00:00:00"##, r##"fff4c9ee7c0b8000"##, r##"1900-01-01 00:00:00"##, r##"-2208988800000000"##),
    (r##"timestamp"##, r##"0001-01-01 00:00:00"##, r##"ff1fe2ffc59c6000"##, r##"0001-01-01 00:00:00"##, r##"-62135596800000000"##),
    (r##"timestamp"##, r##"4713-11-24 00:00:00 BC"##, r##"fd0f9983eb0ae000"##, r##"4713-11-24 00:00:00 BC"##, r##"-210835180800000000"##),
    (r##"timestamp"##, r##"2100-06-01 00:00:00"##, r##"000b42033bd58000"##, r##"2100-06-01 00:00:00"##, r##"4115491200000000"##),
    (r##"timestamp"##, r##"infinity"##, r##"7fffffffffffffff"##, r##"infinity"##, r##"infinity"##),
    (r##"timestamp"##, r##"-infinity"##, r##"8000000000000000"##, r##"-infinity"##, r##"-infinity"##),
    (r##"timestamp"##, r##"1969-12-31 23:59:59.999999"##, r##"fffca2fec4c81fff"##, r##"1969-12-31 23:59:59.999999"##, r##"-1"##),
    (r##"timestamp"##, r##"294246-12-31 23:59:59.999999"##, r##"7ffca2465aa35fff"##, r##"294246-12-31 23:59:59.999999"##, r##"9223371244799999999"##),
    (r##"timestamptz"##, r##"2024-01-31 12:34:56.789+00"##, r##"0002b33be00ca608"##, r##"2024-01-31 13:34:56.789+01"##, r##"1706704496789000"##),
    (r##"timestamptz"##, r##"1900-01-01 00:00:00+00"##, r##"fff4c9ee7c0b8000"##, r##"1900-01-01 00:19:32+00:19:32"##, r##"-2208988800000000"##),
    (r##"timestamptz"##, r##"0044-03-15 12:00:00+00 BC"##, r##"ff1af9e8fb46d000"##, r##"0044-03-15 12:19:32+00:19:32 BC"##, r##"-63517780800000000"##),
    (r##"timestamptz"##, r##"2100-06-01 00:00:00+02"##, r##"000b42018eae3800"##, r##"2100-06-01 00:00:00+02"##, r##"4115484000000000"##),
    (r##"timestamptz"##, r##"infinity"##, r##"7fffffffffffffff"##, r##"infinity"##, r##"infinity"##),
    (r##"timestamptz"##, r##"-infinity"##, r##"8000000000000000"##, r##"-infinity"##, r##"-infinity"##),
    (r##"timestamptz"##, r##"2038-01-19 03:14:08+00"##, r##"0004441ec4c82000"##, r##"2038-01-19 04:14:08+01"##, r##"2147483648000000"##),
    (r##"interval"##, r##"1 year 2 mons 3 days 04:05:06.789"##, r##"000000036c97ca88000000030000000e"##, r##"1 year 2 mons 3 days 04:05:06.789"##, r##"14,3,14706789000"##),
    (r##"interval"##, r##"-1 year +2 mons -3 days -04:05:06"##, r##"fffffffc93743f80fffffffdfffffff6"##, r##"-10 mons -3 days -04:05:06"##, r##"-10,-3,-14706000000"##),
    (r##"interval"##, r##"0"##, r##"00000000000000000000000000000000"##, r##"00:00:00"##, r##"0,0,0"##),
    (r##"interval"##, r##"100 hours"##, r##"00000053d1ac10000000000000000000"##, r##"100:00:00"##, r##"0,0,360000000000"##),
    (r##"interval"##, r##"-00:00:00.000001"##, r##"ffffffffffffffff0000000000000000"##, r##"-00:00:00.000001"##, r##"0,0,-1"##),
    (r##"interval"##, r##"178000000 years"##, r##"0000000000000000000000007f50c600"##, r##"178000000 years"##, r##"2136000000,0,0"##),
    (r##"interval"##, r##"1 day ago"##, r##"0000000000000000ffffffff00000000"##, r##"-1 days"##, r##"0,-1,0"##),
    (r##"interval"##, r##"-2 mons 5 days"##, r##"000000000000000000000005fffffffe"##, r##"-2 mons +5 days"##, r##"-2,5,0"##),
    (r##"uuid"##, r##"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"##, r##"a0eebc999c0b4ef8bb6d6bb9bd380a11"##, r##"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"##, r##""##),
    (r##"uuid"##, r##"00000000-0000-0000-0000-000000000000"##, r##"00000000000000000000000000000000"##, r##"00000000-0000-0000-0000-000000000000"##, r##""##),
    (r##"inet"##, r##"192.168.0.1"##, r##"02200004c0a80001"##, r##"192.168.0.1"##, r##""##),
    (r##"inet"##, r##"192.168.0.1/24"##, r##"02180004c0a80001"##, r##"192.168.0.1/24"##, r##""##),
    (r##"inet"##, r##"::1"##, r##"0380001000000000000000000000000000000001"##, r##"::1"##, r##""##),
    (r##"inet"##, r##"::"##, r##"0380001000000000000000000000000000000000"##, r##"::"##, r##""##),
    (r##"inet"##, r##"2001:db8::1/64"##, r##"0340001020010db8000000000000000000000001"##, r##"2001:db8::1/64"##, r##""##),
    (r##"inet"##, r##"::ffff:1.2.3.4"##, r##"0380001000000000000000000000ffff01020304"##, r##"::ffff:1.2.3.4"##, r##""##),
    (r##"inet"##, r##"::1.2.3.4"##, r##"0380001000000000000000000000000001020304"##, r##"::1.2.3.4"##, r##""##),
    (r##"inet"##, r##"fe80::1:0:0:1"##, r##"03800010fe800000000000000001000000000001"##, r##"fe80::1:0:0:1"##, r##""##),
    (r##"inet"##, r##"1:0:0:1:0:0:0:1"##, r##"0380001000010000000000010000000000000001"##, r##"1:0:0:1::1"##, r##""##),
    (r##"inet"##, r##"1:0:0:1:1:0:0:1"##, r##"0380001000010000000000010001000000000001"##, r##"1::1:1:0:0:1"##, r##""##),
    (r##"inet"##, r##"1::"##, r##"0380001000010000000000000000000000000000"##, r##"1::"##, r##""##),
    (r##"inet"##, r##"0:0:1::"##, r##"0380001000000000000100000000000000000000"##, r##"0:0:1::"##, r##""##),
    (r##"cidr"##, r##"10.0.0.0/8"##, r##"020801040a000000"##, r##"10.0.0.0/8"##, r##""##),
    (r##"cidr"##, r##"192.168.0.1/32"##, r##"02200104c0a80001"##, r##"192.168.0.1/32"##, r##""##),
    (r##"cidr"##, r##"2001:db8::/32"##, r##"0320011020010db8000000000000000000000000"##, r##"2001:db8::/32"##, r##""##),
    (r##"macaddr"##, r##"08:00:2b:01:02:03"##, r##"08002b010203"##, r##"08:00:2b:01:02:03"##, r##""##),
    (r##"macaddr8"##, r##"08:00:2b:01:02:03:04:05"##, r##"08002b0102030405"##, r##"08:00:2b:01:02:03:04:05"##, r##""##),
    (r##"pg_lsn"##, r##"16/B374D848"##, r##"00000016b374d848"##, r##"16/B374D848"##, r##""##),
    (r##"mood"##, r##"happy ☺"##, r##"686170707920e298ba"##, r##"happy ☺"##, r##""##),
    (r##"posint"##, r##"5"##, r##"00000005"##, r##"5"##, r##""##),
    (r##"int4[]"##, r##"{1,2,NULL,4}"##, r##"000000010000000100000017000000040000000100000004000000010000000400000002ffffffff0000000400000004"##, r##"{1,2,NULL,4}"##, r##""##),
    (r##"int4[]"##, r##"{}"##, r##"000000000000000000000017"##, r##"{}"##, r##""##),
    (r##"int4[]"##, r##"{{1,2},{3,4}}"##, r##"000000020000000000000017000000020000000100000002000000010000000400000001000000040000000200000004000000030000000400000004"##, r##"{{1,2},{3,4}}"##, r##""##),
    (r##"int4[]"##, r##"[0:1]={7,8}"##, r##"000000010000000000000017000000020000000000000004000000070000000400000008"##, r##"[0:1]={7,8}"##, r##""##),
    (r##"int8[]"##, r##"{NULL}"##, r##"0000000100000001000000140000000100000001ffffffff"##, r##"{NULL}"##, r##""##),
    (r##"text[]"##, r##"{"a b","NULL",NULL,"q\"x\\y","",é,"{,}"}"##, r##"000000010000000100000019000000070000000100000003612062000000044e554c4cffffffff000000057122785c790000000000000002c3a9000000037b2c7d"##, r##"{"a b","NULL",NULL,"q\"x\\y","",é,"{,}"}"##, r##""##),
    (r##"numeric[]"##, r##"{1.5,NaN,-0.00}"##, r##"0000000100000000000006a400000003000000010000000c0002000000000001000113880000000800000000c0000000000000080000000000000002"##, r##"{1.5,NaN,0.00}"##, r##""##),
    (r##"date[]"##, r##"{2024-01-31,infinity,NULL,0044-03-15 BC}"##, r##"00000001000000010000043a0000000400000001000000040000225c000000047fffffffffffffff00000004fff49d7b"##, r##"{2024-01-31,infinity,NULL,"0044-03-15 BC"}"##, r##""##),
    (r##"timestamptz[]"##, r##"{"2024-01-31 12:34:56+00",NULL}"##, r##"0000000100000001000004a00000000200000001000000080002b33be0009c00ffffffff"##, r##"{"2024-01-31 13:34:56+01",NULL}"##, r##""##),
    (r##"uuid[]"##, r##"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"##, r##"000000010000000000000b86000000010000000100000010a0eebc999c0b4ef8bb6d6bb9bd380a11"##, r##"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"##, r##""##),
    (r##"bool[]"##, r##"{t,f,NULL}"##, r##"000000010000000100000010000000030000000100000001010000000100ffffffff"##, r##"{t,f,NULL}"##, r##""##),
    (r##"float8[]"##, r##"{NaN,-Infinity,-0,1.5}"##, r##"0000000100000000000002bd0000000400000001000000087ff800000000000000000008fff0000000000000000000088000000000000000000000083ff8000000000000"##, r##"{NaN,-Infinity,-0,1.5}"##, r##""##),
    (r##"jsonb[]"##, r##"{"{\"a\": 1}",NULL}"##, r##"000000010000000100000eda000000020000000100000009017b2261223a20317dffffffff"##, r##"{"{\"a\": 1}",NULL}"##, r##""##),
    (r##"bytea[]"##, r##"{"\\\\x00ff",NULL}"##, r##"0000000100000001000000110000000200000001000000065c7830306666ffffffff"##, r##"{"\\x5c7830306666",NULL}"##, r##""##),
    (r##"mood[]"##, r##"{sad,"happy ☺"}"##, r##"00000001000000000000401c00000002000000010000000373616400000009686170707920e298ba"##, r##"{sad,"happy ☺"}"##, r##""##),
    (r##"interval[]"##, r##"{"1 day",NULL}"##, r##"0000000100000001000004a200000002000000010000001000000000000000000000000100000000ffffffff"##, r##"{"1 day",NULL}"##, r##""##),
    (r##"inet[]"##, r##"{10.0.0.1/8,::1}"##, r##"000000010000000000000365000000020000000100000008020800040a000001000000140380001000000000000000000000000000000001"##, r##"{10.0.0.1/8,::1}"##, r##""##),
    (r##"posint[]"##, r##"{5,6}"##, r##"000000010000000000004024000000020000000100000004000000050000000400000006"##, r##"{5,6}"##, r##""##),
    (r##"numeric(10,2)[]"##, r##"{1.5,-0.01}"##, r##"0000000100000000000006a400000002000000010000000c0002000000000002000113880000000a0001ffff400000020064"##, r##"{1.50,-0.01}"##, r##""##),
    (r##"varchar[]"##, r##"{}"##, r##"000000000000000000000413"##, r##"{}"##, r##""##),
    (r##"point"##, r##"(1,2)"##, r##"3ff00000000000004000000000000000"##, r##"(1,2)"##, r##""##),
    (r##"int4range"##, r##"[1,5)"##, r##"0200000004000000010000000400000005"##, r##"[1,5)"##, r##""##),
    (r##"tsvector"##, r##"a:1 b:2"##, r##"00000002610000010001620000010002"##, r##"'a':1 'b':2"##, r##""##),
];

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, IntervalMonthDayNanoArray, ListArray,
    StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use arrow::util::display::array_value_to_string;

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tmod(p: i32, s: i32) -> i32 {
    ((p << 16) | (s & 0x7ff)) + 4
}

/// The PgType the catalog code would build for a test type name.
fn pg_type(name: &str) -> PgType {
    if let Some(el) = name.strip_suffix("[]") {
        return PgType {
            oid: 0,
            name: format!("_{el}"),
            typmod: -1,
            kind: PgTypeKind::Array {
                element: Box::new(pg_type(el)),
            },
        };
    }
    let (base, typmod) = match name.split_once('(') {
        Some((b, args)) => {
            let args: Vec<i32> = args
                .trim_end_matches(')')
                .split(',')
                .map(|a| a.trim().parse().unwrap())
                .collect();
            let typmod = if b == "numeric" {
                tmod(args[0], args[1])
            } else {
                args[0] + 4
            };
            (b, typmod)
        }
        None => (name, -1),
    };
    let oid = match base {
        "bool" => oid::BOOL,
        "int2" => oid::INT2,
        "int4" => oid::INT4,
        "int8" => oid::INT8,
        "oid" => oid::OID,
        "float4" => oid::FLOAT4,
        "float8" => oid::FLOAT8,
        "numeric" => oid::NUMERIC,
        "money" => oid::MONEY,
        "text" => oid::TEXT,
        "varchar" => oid::VARCHAR,
        "bpchar" => oid::BPCHAR,
        "name" => oid::NAME,
        "\"char\"" => oid::CHAR,
        "json" => oid::JSON,
        "jsonb" => oid::JSONB,
        "xml" => oid::XML,
        "bytea" => oid::BYTEA,
        "date" => oid::DATE,
        "time" => oid::TIME,
        "timetz" => oid::TIMETZ,
        "timestamp" => oid::TIMESTAMP,
        "timestamptz" => oid::TIMESTAMPTZ,
        "interval" => oid::INTERVAL,
        "uuid" => oid::UUID,
        "inet" => oid::INET,
        "cidr" => oid::CIDR,
        "macaddr" => oid::MACADDR,
        "macaddr8" => oid::MACADDR8,
        "pg_lsn" => oid::PG_LSN,
        "mood" => {
            return PgType {
                oid: 16390,
                name: "mood".into(),
                typmod: -1,
                kind: PgTypeKind::Enum,
            }
        }
        "posint" => {
            return PgType {
                oid: 16400,
                name: "posint".into(),
                typmod: -1,
                kind: PgTypeKind::Domain {
                    base: Box::new(pg_type("int4")),
                },
            }
        }
        "point" => 600,
        "int4range" => 3904,
        "tsvector" => 3614,
        other => panic!("test type {other}"),
    };
    let kind = if matches!(base, "int4range") {
        PgTypeKind::Other
    } else {
        PgTypeKind::Base
    };
    PgType {
        oid,
        name: base.into(),
        typmod,
        kind,
    }
}

fn decode(m: &ArrowMapping, binary: bool, v: Option<&[u8]>) -> (Result<(), TypeError>, ArrayRef) {
    let mut d = ColumnDecoder::new(m, 4);
    let r = if binary {
        d.append_binary(v)
    } else {
        d.append_text(v)
    };
    assert_eq!(d.len(), 1, "one row appended even on error");
    (r, d.finish())
}

fn f32_bits(a: &ArrayRef) -> u32 {
    a.as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .value(0)
        .to_bits()
}
fn f64_bits(a: &ArrayRef) -> u64 {
    a.as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .value(0)
        .to_bits()
}

/// Checks the Arrow value decoded from a real server's bytes against PostgreSQL's own
/// text output (or its computed `extra`), and that binary and text decoding agree.
#[test]
fn real_server_values() {
    let opts = TypeOptions::default();
    for &(ty, lit, hex, txt, extra) in PG_ROWS {
        let ctx = format!("{ty} {lit:?}");
        let m = arrow_type(&pg_type(ty), &opts).unwrap();
        let bin = unhex(hex);
        let (rb, ab) = decode(&m, true, Some(&bin));
        let (rt, at) = decode(&m, false, Some(txt.as_bytes()));
        if m.needs_text_format {
            assert!(
                matches!(rb, Err(TypeError::BinaryUnsupported { .. })),
                "{ctx}: {rb:?}"
            );
            assert!(ab.is_null(0), "{ctx}");
            rt.unwrap();
            assert_eq!(at.as_string::<i32>().value(0), txt, "{ctx}");
            assert!(m.warning.as_deref().unwrap().contains(ty), "{ctx}");
            continue;
        }
        if txt.starts_with("{{") {
            // Multi-dimensional arrays are refused in both formats.
            for r in [&rb, &rt] {
                assert!(
                    matches!(r, Err(e) if e.to_string().contains("multi-dimensional")),
                    "{ctx}: {r:?}"
                );
            }
            continue;
        }
        if ty == "numeric(10,2)" && txt == "NaN" {
            assert!(
                matches!(rb, Err(TypeError::NumericSpecial { .. })),
                "{ctx}: {rb:?}"
            );
            assert!(
                matches!(rt, Err(TypeError::NumericSpecial { .. })),
                "{ctx}: {rt:?}"
            );
            assert!(ab.is_null(0) && at.is_null(0));
            continue;
        }
        rb.unwrap_or_else(|e| panic!("{ctx}: binary: {e}"));
        rt.unwrap_or_else(|e| panic!("{ctx}: text: {e}"));
        assert_eq!(ab.data_type(), &m.data_type, "{ctx}");
        assert_eq!(&*ab, &*at, "{ctx}: binary and text decoding differ");
        assert!(ab.is_valid(0), "{ctx}");
        // (array_value_to_string cannot show tz "UTC" without arrow's chrono-tz feature.)
        let shown = || array_value_to_string(&ab, 0).unwrap();
        match ab.data_type() {
            DataType::Utf8 => assert_eq!(ab.as_string::<i32>().value(0), txt, "{ctx}"),
            DataType::Boolean => {
                assert_eq!(if shown() == "true" { "t" } else { "f" }, txt, "{ctx}")
            }
            DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt32 => {
                assert_eq!(shown(), txt, "{ctx}")
            }
            DataType::Float32 => assert_eq!(
                f32_bits(&ab),
                txt.parse::<f32>().unwrap().to_bits(),
                "{ctx}"
            ),
            DataType::Float64 => assert_eq!(
                f64_bits(&ab),
                txt.parse::<f64>().unwrap().to_bits(),
                "{ctx}"
            ),
            DataType::Decimal128(19, 2) if ty == "money" => assert_eq!(shown(), lit, "{ctx}"),
            DataType::Decimal128(..) | DataType::Decimal256(..) => {
                assert_eq!(shown(), txt, "{ctx}")
            }
            DataType::Binary => {
                let b = ab.as_any().downcast_ref::<BinaryArray>().unwrap().value(0);
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                assert_eq!(format!("\\x{h}"), txt, "{ctx}");
            }
            DataType::FixedSizeBinary(16) => {
                let b = ab
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .unwrap()
                    .value(0);
                assert_eq!(format_uuid(b.try_into().unwrap()), txt, "{ctx}");
            }
            DataType::Date32 => {
                let v = ab.as_any().downcast_ref::<Date32Array>().unwrap().value(0);
                let want = match extra {
                    "infinity" => i32::MAX,
                    "-infinity" => i32::MIN,
                    x => x.parse().unwrap(),
                };
                assert_eq!(v, want, "{ctx}");
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let v = ab
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap()
                    .value(0);
                let want = match extra {
                    "infinity" => i64::MAX,
                    "-infinity" => i64::MIN,
                    x => x.parse().unwrap(),
                };
                assert_eq!(v, want, "{ctx}");
            }
            DataType::Time64(TimeUnit::Microsecond) => {
                let v = ab
                    .as_any()
                    .downcast_ref::<Time64MicrosecondArray>()
                    .unwrap()
                    .value(0);
                assert_eq!(v.to_string(), extra, "{ctx}");
            }
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                let v = ab
                    .as_any()
                    .downcast_ref::<IntervalMonthDayNanoArray>()
                    .unwrap()
                    .value(0);
                let want = format!("{},{},{}", v.months, v.days, v.nanoseconds / 1000);
                assert_eq!(want, extra, "{ctx}");
                assert_eq!(v.nanoseconds % 1000, 0);
            }
            DataType::List(_) => {}
            other => panic!("{ctx}: unchecked type {other}"),
        }
    }
}

fn row<'a>(
    ty: &str,
    lit_prefix: &str,
) -> &'a (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
) {
    PG_ROWS
        .iter()
        .find(|r| r.0 == ty && r.1.starts_with(lit_prefix))
        .unwrap_or_else(|| panic!("no row {ty} {lit_prefix}"))
}

fn list_values(a: &ArrayRef) -> ArrayRef {
    a.as_any().downcast_ref::<ListArray>().unwrap().value(0)
}

#[test]
fn arrays_from_real_server() {
    let opts = TypeOptions::default();
    let m = arrow_type(&pg_type("int4[]"), &opts).unwrap();
    assert_eq!(m.data_type, DataType::new_list(DataType::Int32, true));

    let (_, a) = decode(&m, true, Some(&unhex(row("int4[]", "{1,2,NULL").2)));
    let v = list_values(&a);
    assert_eq!(v.len(), 4);
    assert!(v.is_null(2));
    assert_eq!(array_value_to_string(&v, 3).unwrap(), "4");

    // Empty array: an empty list, not NULL.
    let (_, a) = decode(&m, true, Some(&unhex(row("int4[]", "{}").2)));
    assert!(a.is_valid(0));
    assert_eq!(list_values(&a).len(), 0);
    let (_, a) = decode(&m, true, None);
    assert!(a.is_null(0));

    // Multi-dimensional: refused, never flattened.
    let (r, a) = decode(&m, true, Some(&unhex(row("int4[]", "{{1,2}").2)));
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("multi-dimensional array"),
        "refused"
    );
    assert!(a.is_null(0));

    // Text elements with quoting, escapes, NULL vs "NULL".
    let m = arrow_type(&pg_type("text[]"), &opts).unwrap();
    let (r, a) = decode(&m, true, Some(&unhex(row("text[]", "").2)));
    r.unwrap();
    let v = list_values(&a);
    let v = v.as_string::<i32>();
    assert_eq!(v.value(0), "a b");
    assert_eq!(v.value(1), "NULL");
    assert!(v.is_null(2));
    assert_eq!(v.value(3), "q\"x\\y");
    assert_eq!(v.value(4), "");
    assert_eq!(v.value(5), "é");
    assert_eq!(v.value(6), "{,}");

    // Unconstrained numeric elements: exact text.
    let m = arrow_type(&pg_type("numeric[]"), &opts).unwrap();
    let (_, a) = decode(&m, true, Some(&unhex(row("numeric[]", "").2)));
    let v = list_values(&a);
    let v = v.as_string::<i32>();
    assert_eq!((v.value(0), v.value(1), v.value(2)), ("1.5", "NaN", "0.00"));
}

#[test]
fn mapping_table() {
    let o = TypeOptions::default();
    let dt = |name: &str| arrow_type(&pg_type(name), &o).unwrap().data_type;
    assert_eq!(dt("bool"), DataType::Boolean);
    assert_eq!(dt("oid"), DataType::UInt32);
    assert_eq!(dt("numeric(38,9)"), DataType::Decimal128(38, 9));
    assert_eq!(dt("numeric(39,0)"), DataType::Decimal256(39, 0));
    assert_eq!(dt("numeric(76,20)"), DataType::Decimal256(76, 20));
    assert_eq!(dt("numeric(77,2)"), DataType::Utf8);
    assert_eq!(dt("numeric(1000,0)"), DataType::Utf8);
    assert_eq!(dt("numeric"), DataType::Utf8);
    assert_eq!(dt("numeric(5,-2)"), DataType::Decimal128(7, 0));
    assert_eq!(dt("numeric(3,5)"), DataType::Decimal128(5, 5));
    assert_eq!(dt("money"), DataType::Decimal128(19, 2));
    assert_eq!(dt("bytea"), DataType::Binary);
    assert_eq!(dt("date"), DataType::Date32);
    assert_eq!(dt("time"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(dt("timetz"), DataType::Utf8);
    assert_eq!(
        dt("timestamp"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(
        dt("timestamptz"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        dt("interval"),
        DataType::Interval(IntervalUnit::MonthDayNano)
    );
    assert_eq!(dt("uuid"), DataType::FixedSizeBinary(16));
    assert_eq!(dt("posint"), DataType::Int32);
    assert_eq!(dt("mood"), DataType::Utf8);
    assert_eq!(dt("posint[]"), DataType::new_list(DataType::Int32, true));

    let citext = PgType::base(98765, "citext");
    let m = arrow_type(&citext, &o).unwrap();
    assert_eq!((m.data_type, m.needs_text_format), (DataType::Utf8, false));

    for other in ["point", "int4range", "tsvector", "point[]"] {
        let m = arrow_type(&pg_type(other), &o).unwrap();
        assert!(m.needs_text_format, "{other}");
        assert!(m.warning.is_some(), "{other}");
    }
    assert_eq!(dt("point[]"), DataType::new_list(DataType::Utf8, true));

    let bad = TypeOptions {
        unconstrained_numeric: UnconstrainedNumeric::Decimal {
            precision: 77,
            scale: 0,
        },
        ..TypeOptions::default()
    };
    assert!(matches!(
        arrow_type(&pg_type("numeric"), &bad),
        Err(TypeError::Unsupported { .. })
    ));
    // A declared precision still wins over the unconstrained option.
    assert_eq!(
        arrow_type(&pg_type("numeric(10,2)"), &bad)
            .unwrap()
            .data_type,
        DataType::Decimal128(10, 2)
    );
}

#[test]
fn numeric_special_modes() {
    let nan = unhex(row("numeric", "NaN").2);
    let inf = unhex(row("numeric", "Infinity").2);
    let ninf = unhex(row("numeric", "-Infinity").2);
    let t = pg_type("numeric(10,2)");

    let m = arrow_type(&t, &TypeOptions::default()).unwrap();
    for v in [&nan, &inf, &ninf] {
        let (r, a) = decode(&m, true, Some(v));
        let e = r.unwrap_err();
        assert!(matches!(e, TypeError::NumericSpecial { .. }));
        assert!(a.is_null(0));
    }
    let e = decode(&m, true, Some(&ninf)).0.unwrap_err().to_string();
    assert!(
        e.contains("-Infinity") && e.contains("Decimal128(10, 2)"),
        "{e}"
    );

    let opts = TypeOptions {
        numeric_special: NumericMode::NullWithWarning,
        ..TypeOptions::default()
    };
    let m = arrow_type(&t, &opts).unwrap();
    let mut d = ColumnDecoder::new(&m, 4);
    d.append_binary(Some(&nan)).unwrap();
    d.append_text(Some(b"Infinity")).unwrap();
    d.append_text(Some(b"1.25")).unwrap();
    let w = d.take_warnings();
    assert_eq!(w.count, 2);
    assert!(w.first.unwrap().contains("NaN"));
    assert_eq!(d.take_warnings().count, 0);
    let a = d.finish();
    assert!(a.is_null(0) && a.is_null(1));
    assert_eq!(array_value_to_string(&a, 2).unwrap(), "1.25");

    // Text mode keeps them as text.
    let m = arrow_type(&pg_type("numeric"), &TypeOptions::default()).unwrap();
    for (v, s) in [(&nan, "NaN"), (&inf, "Infinity"), (&ninf, "-Infinity")] {
        let (r, a) = decode(&m, true, Some(v));
        r.unwrap();
        assert_eq!(a.as_string::<i32>().value(0), s);
    }

    // Warnings from list elements reach the list decoder.
    let m = arrow_type(&pg_type("numeric(10,2)[]"), &opts).unwrap();
    let mut d = ColumnDecoder::new(&m, 1);
    d.append_text(Some(b"{1,NaN}")).unwrap();
    assert_eq!(d.take_warnings().count, 1);
}

#[test]
fn numeric_exactness() {
    // Unconstrained numeric: text keeps every digit and the display scale.
    let m = arrow_type(&pg_type("numeric"), &TypeOptions::default()).unwrap();
    let big = row("numeric", "9999999999");
    let (r, a) = decode(&m, true, Some(&unhex(big.2)));
    r.unwrap();
    let s = a.as_string::<i32>().value(0);
    assert_eq!(s.len(), 1001);
    assert_eq!(s, big.3);
    assert!(s.starts_with("9999") && s.ends_with("1117"));

    // Negative zero as the wire can carry it (sign bit, no digits) prints like PG: "-0".
    let (_, a) = decode(&m, true, Some(&[0, 0, 0, 0, 0x40, 0, 0, 2]));
    assert_eq!(a.as_string::<i32>().value(0), "-0.00");

    // Unconstrained -> Decimal(38, 9): fits, or an error naming the value; never rounded.
    let opts = TypeOptions {
        unconstrained_numeric: UnconstrainedNumeric::Decimal {
            precision: 38,
            scale: 9,
        },
        ..TypeOptions::default()
    };
    let m = arrow_type(&pg_type("numeric"), &opts).unwrap();
    assert_eq!(m.data_type, DataType::Decimal128(38, 9));
    let (r, a) = decode(
        &m,
        true,
        Some(&unhex(row("numeric", "12345678901234567890.1").2)),
    );
    r.unwrap();
    assert_eq!(
        a.as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap()
            .value(0),
        12345678901234567890123456789
    );
    let (r, a) = decode(&m, true, Some(&unhex(row("numeric", "0.000001").2)));
    r.unwrap();
    assert_eq!(
        a.as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap()
            .value(0),
        1000
    );
    let (r, a) = decode(&m, true, Some(&unhex(row("numeric", "1e-10").2)));
    let e = r.unwrap_err();
    assert!(a.is_null(0));
    let msg = e.to_string();
    assert!(
        msg.contains("0.0000000001") && msg.contains("no rounding"),
        "{msg}"
    );
    let (r, _) = decode(&m, true, Some(&unhex(big.2)));
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("precision") && msg.len() < 300, "{msg}");
    let (r, _) = decode(&m, false, Some(b"0.1234567891"));
    assert!(matches!(r, Err(TypeError::OutOfRange { .. })));
    let (r, a) = decode(&m, false, Some(b"-0.123456789"));
    r.unwrap();
    assert_eq!(
        a.as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap()
            .value(0),
        -123456789
    );

    // 1e100 into Decimal256(76, 0): too big.
    let opts = TypeOptions {
        unconstrained_numeric: UnconstrainedNumeric::Decimal {
            precision: 76,
            scale: 0,
        },
        ..TypeOptions::default()
    };
    let m = arrow_type(&pg_type("numeric"), &opts).unwrap();
    assert!(decode(&m, true, Some(&unhex(row("numeric", "1e100").2)))
        .0
        .is_err());
    let (r, a) = decode(&m, true, Some(&unhex(row("numeric", "10000").2)));
    r.unwrap();
    assert_eq!(array_value_to_string(&a, 0).unwrap(), "10000");
}

#[test]
fn large_bytea_and_unicode() {
    let m = arrow_type(&pg_type("bytea"), &TypeOptions::default()).unwrap();
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut d = ColumnDecoder::new(&m, 2);
    d.append_binary(Some(&big)).unwrap();
    let mut hex = String::from("\\x");
    for b in &big {
        hex.push_str(&format!("{b:02x}"));
    }
    d.append_text(Some(hex.as_bytes())).unwrap();
    assert!(d.byte_size_estimate() >= 2 * big.len());
    let a = d.finish();
    assert_eq!(d.len(), 0);
    let a = a.as_any().downcast_ref::<BinaryArray>().unwrap();
    assert_eq!(a.value(0), &big[..]);
    assert_eq!(a.value(1), &big[..]);

    let m = arrow_type(&pg_type("text"), &TypeOptions::default()).unwrap();
    let (r, a) = decode(&m, true, Some("日本語 🎉".as_bytes()));
    r.unwrap();
    assert_eq!(
        a.as_any().downcast_ref::<StringArray>().unwrap().value(0),
        "日本語 🎉"
    );
    let (r, a) = decode(&m, true, Some(b"\xff\xfe"));
    assert!(matches!(r, Err(TypeError::InvalidValue { .. })));
    assert!(a.is_null(0));
}

#[test]
fn timestamp_beyond_arrow_range_is_an_error() {
    // PostgreSQL's largest timestamp, 294276-12-31 23:59:59.999999, is past i64 micros
    // since 1970: an error, not a wrapped value.
    let m = arrow_type(&pg_type("timestamp"), &TypeOptions::default()).unwrap();
    let pg_max: i64 = 9_223_371_331_199_999_999;
    let (r, a) = decode(&m, true, Some(&pg_max.to_be_bytes()));
    assert!(matches!(
        r,
        Err(TypeError::OutOfRange { .. }) | Err(TypeError::InvalidValue { .. })
    ));
    assert!(a.is_null(0));
    let (r, _) = decode(&m, false, Some(b"294276-12-31 23:59:59.999999"));
    assert!(r.is_err());
}

#[test]
fn errors_keep_rows_aligned() {
    let o = TypeOptions::default();
    let m = arrow_type(&pg_type("int4[]"), &o).unwrap();
    let mut d = ColumnDecoder::new(&m, 4);
    d.append_text(Some(b"{1,2}")).unwrap();
    assert!(d.append_text(Some(b"{3,x,5}")).is_err());
    d.append_binary(Some(&unhex(row("int4[]", "{1,2,NULL").2)))
        .unwrap();
    assert!(d.append_binary(Some(&[0, 0, 0, 1])).is_err());
    d.append_null();
    assert_eq!(d.len(), 5);
    let a = d.finish();
    let l = a.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(l.len(), 5);
    assert!(l.is_valid(0) && l.is_null(1) && l.is_valid(2) && l.is_null(3) && l.is_null(4));
    assert_eq!(l.value(0).len(), 2);
    assert_eq!(l.value(2).len(), 4);
    a.to_data().validate_full().unwrap();

    let m = arrow_type(&pg_type("int8"), &o).unwrap();
    let mut d = ColumnDecoder::new(&m, 4);
    let e = d.append_binary(Some(&[1, 2, 3])).unwrap_err();
    assert!(e.to_string().contains("int8"), "{e}");
    let e = d
        .append_text(Some("9".repeat(500).as_bytes()))
        .unwrap_err()
        .to_string();
    assert!(e.len() < 200, "value shown truncated: {e}");
    assert_eq!(d.len(), 2);

    // Binary values for a text-only type.
    let m = arrow_type(&pg_type("point"), &o).unwrap();
    let mut d = ColumnDecoder::new(&m, 1);
    assert!(matches!(
        d.append_binary(Some(b"x")),
        Err(TypeError::BinaryUnsupported { .. })
    ));
    assert_eq!(d.len(), 1);
}

#[test]
fn text_only_forms() {
    let o = TypeOptions::default();
    let one = |ty: &str, v: &str| {
        let m = arrow_type(&pg_type(ty), &o).unwrap();
        let (r, a) = decode(&m, false, Some(v.as_bytes()));
        r.unwrap_or_else(|e| panic!("{ty} {v}: {e}"));
        a
    };
    let b = one("bool", "f");
    assert!(!b.as_any().downcast_ref::<BooleanArray>().unwrap().value(0));
    let a = one("bytea", "\\x0102");
    assert_eq!(
        a.as_any().downcast_ref::<BinaryArray>().unwrap().value(0),
        [1, 2]
    );
    let a = one("timestamptz", "2024-01-31 12:34:56.789+00");
    assert_eq!(
        a.as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap()
            .value(0),
        1_706_704_496_789_000
    );
    let a = one("timestamptz", "2024-01-31 18:04:56.789+05:30");
    assert_eq!(
        a.as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap()
            .value(0),
        1_706_704_496_789_000
    );
    let a = one(
        "interval",
        "@ 1 year 2 mons 3 days 4 hours 5 mins 6.789 secs ago",
    );
    let v = a
        .as_any()
        .downcast_ref::<IntervalMonthDayNanoArray>()
        .unwrap()
        .value(0);
    assert_eq!(
        (v.months, v.days, v.nanoseconds),
        (-14, -3, -14_706_789_000_000)
    );
    // Real server output with bytea_output = escape and IntervalStyle = postgres_verbose.
    let a = one("bytea", r"\000\377\\A");
    assert_eq!(
        a.as_any().downcast_ref::<BinaryArray>().unwrap().value(0),
        [0, 255, b'\\', b'A']
    );
    for (txt, want) in [
        (
            "@ 10 mons 3 days 4 hours 5 mins 6.5 secs ago",
            (-10, -3, -14_706_500_000_000),
        ),
        ("@ 1 day 1 sec", (0, 1, 1_000_000_000)),
        ("@ 0.000001 secs ago", (0, 0, -1000)),
    ] {
        let a = one("interval", txt);
        let v = a
            .as_any()
            .downcast_ref::<IntervalMonthDayNanoArray>()
            .unwrap()
            .value(0);
        assert_eq!((v.months, v.days, v.nanoseconds), want, "{txt}");
    }
    let a = one("money", "$1,234.56");
    assert_eq!(
        a.as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap()
            .value(0),
        123456
    );
    let a = one("uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11");
    assert_eq!(
        format_uuid(
            a.as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap()
                .value(0)
                .try_into()
                .unwrap()
        ),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    let a = one("float8", "-Infinity");
    assert_eq!(f64_bits(&a), f64::NEG_INFINITY.to_bits());
    let a = one("date", "4713-11-24 BC");
    // 4713 BC is 366 days after 4714-11-24 BC (-4712 is a leap year); PG: -210835180800000000 us.
    assert_eq!(
        a.as_any().downcast_ref::<Date32Array>().unwrap().value(0),
        -2_440_222
    );
    let a: Arc<dyn Array> = one("text[]", r#"{"a b",NULL,"NULL",c\,d}"#);
    let v = list_values(&a);
    let v = v.as_string::<i32>();
    assert_eq!(
        (v.value(0), v.is_null(1), v.value(2), v.value(3)),
        ("a b", true, "NULL", "c,d")
    );
}

/// Truncated and corrupted inputs never panic, and every append adds exactly one row.
#[test]
fn malformed_inputs_do_not_panic() {
    let opts = TypeOptions::default();
    let mut seed: u32 = 0x1234_5678;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for &(ty, _, hex, txt, _) in PG_ROWS {
        let m = arrow_type(&pg_type(ty), &opts).unwrap();
        let mut d = ColumnDecoder::new(&m, 8);
        let bin = unhex(hex);
        let mut n = 0;
        for cut in 0..bin.len().min(300) {
            let _ = d.append_binary(Some(&bin[..cut]));
            n += 1;
        }
        for cut in 0..txt.len().min(300) {
            let _ = d.append_text(Some(&txt.as_bytes()[..cut]));
            n += 1;
        }
        for _ in 0..200 {
            let mut b = bin.clone();
            if !b.is_empty() {
                let i = rnd() as usize % b.len();
                b[i] = rnd() as u8;
            }
            let _ = d.append_binary(Some(&b));
            let mut t = txt.as_bytes().to_vec();
            if !t.is_empty() {
                let i = rnd() as usize % t.len();
                t[i] = b"{}\",\\ -:.x0"[rnd() as usize % 11];
            }
            let _ = d.append_text(Some(&t));
            n += 2;
        }
        assert_eq!(d.len(), n, "{ty}");
        let a = d.finish();
        assert_eq!(a.len(), n);
        a.to_data()
            .validate_full()
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
    }
}
