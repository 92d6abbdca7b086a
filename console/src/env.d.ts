// The stylesheet is imported for esbuild, which bundles it to console.css.
declare module "*.css";
