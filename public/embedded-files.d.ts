// src/http/pages.ts imports the page assets `with { type: 'file' }`: each import is the file's path,
// on disk when run from the sources and inside the binary after `bun build --compile`.
// (bun-types already declares `*.html`, as an HTML bundle; pages.ts reads those as paths too.)

declare module '*.css' {
  const path: string
  export default path
}

declare module '*.js' {
  const path: string
  export default path
}

declare module '*.svg' {
  const path: string
  export default path
}
