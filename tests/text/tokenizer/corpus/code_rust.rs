//! Tiny tokenizer-ish utilities (corpus sample).
use std::collections::HashMap;
use std::fmt::{self, Display};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token<'a> {
    Ident(&'a str),
    Number(i64),
    Punct(char),
    Str(String),
}

impl<'a> Display for Token<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "ident({s})"),
            Token::Number(n) => write!(f, "num({n})"),
            Token::Punct(c) => write!(f, "punct({c:?})"),
            Token::Str(s) => write!(f, "str({s:?})"),
        }
    }
}

pub fn lex(input: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::with_capacity(input.len() / 4);
    let bytes = input.as_bytes();
    let mut i = 0usize;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            'a'..='z' | 'A'..='Z' | '_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push(Token::Ident(&input[start..i]));
            }
            '0'..='9' => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() { i += 1; }
                let n: i64 = input[start..i].parse().map_err(|e| format!("{e} at {start}"))?;
                out.push(Token::Number(n));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    s.push(bytes[i] as char);
                    i += 1;
                }
                if i == bytes.len() { return Err("unterminated string".to_owned()); }
                i += 1;
                out.push(Token::Str(s));
            }
            _ => { out.push(Token::Punct(c)); i += 1; }
        }
    }
    Ok(out)
}

fn main() {
    let toks = lex(r#"let x_1 = 42 + "hi" * (y - 7);"#).expect("lex failed");
    let mut freq: HashMap<std::mem::Discriminant<Token>, usize> = HashMap::new();
    for t in &toks { *freq.entry(std::mem::discriminant(t)).or_default() += 1; }
    println!("{:#?}", toks.iter().map(ToString::to_string).collect::<Vec<_>>());
    let arr: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
    let v: u32 = u32::from_be_bytes(arr);
    assert_eq!(v, 0xdead_beef, "endianness");
    let closure = |a: &mut Vec<i32>| -> Option<&i32> { a.sort_unstable(); a.first() };
    let _ = closure(&mut vec![3, 2, 1]);
}
