import { readFile } from 'node:fs/promises';

/**
 * A config file's text, without the UTF-8 byte order mark an editor may have put first (Windows
 * Notepad, PowerShell's `-Encoding UTF8`): RFC 8259 lets a parser ignore it, as Node's `require`
 * does, where `JSON.parse` refuses it with an error pointing at an invisible character.
 */
export async function readConfigText(file: string): Promise<string> {
  const text = await readFile(file, 'utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
